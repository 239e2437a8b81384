use rusqlite::{params, Connection, OptionalExtension, Row};
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::error::codes;
use sessiond_core::{AccountId, Error, KeyId, Timestamp};
use sessiond_store::StoreError;
use uuid::Uuid;

use crate::internal;

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

pub fn ensure(conn: &Connection, a: &Account) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
        params![a.id.as_uuid(), a.name, a.created_at.millis()],
    )
    .map(|_| ())
    .map_err(internal)
}

pub fn create(conn: &Connection, a: Account) -> Result<Account, StoreError> {
    match conn.execute(
        "INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)",
        params![a.id.as_uuid(), a.name, a.created_at.millis()],
    ) {
        Ok(_) => Ok(a),
        Err(e) if is_unique_violation(&e) => Err(Error::conflict(
            codes::ACCOUNT_EXISTS,
            format!("Account {} already exists", a.id),
        )
        .into()),
        Err(e) => Err(internal(e)),
    }
}

pub fn get(conn: &Connection, id: AccountId) -> Result<Option<Account>, StoreError> {
    conn.prepare_cached("SELECT id, name, created_at FROM accounts WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row(params![id.as_uuid()], |r| {
                Ok(Account {
                    id: AccountId(r.get(0)?),
                    name: r.get(1)?,
                    created_at: Timestamp::from_millis(r.get(2)?),
                })
            })
            .optional()
        })
        .map_err(internal)
}

pub fn create_key(conn: &Connection, k: ApiKey) -> Result<ApiKey, StoreError> {
    if get(conn, k.account_id)?.is_none() {
        return Err(Error::not_found(
            codes::ACCOUNT_NOT_FOUND,
            format!("Account {} not found", k.account_id),
        )
        .into());
    }
    match conn.execute(
        "INSERT INTO api_keys (id, account_id, name, prefix, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![k.id.as_uuid(), k.account_id.as_uuid(), k.name, k.prefix, &k.hash[..], k.created_at.millis()],
    ) {
        Ok(_) => Ok(k),
        Err(e) if is_unique_violation(&e) => Err(Error::conflict(
            codes::KEY_EXISTS,
            "this key secret is already registered",
        )
        .into()),
        Err(e) => Err(internal(e)),
    }
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let hash: Vec<u8> = r.get(4)?;
    let mut h = [0u8; 32];
    if hash.len() == 32 {
        h.copy_from_slice(&hash);
    }
    Ok(ApiKey {
        id: KeyId(r.get::<_, Uuid>(0)?),
        account_id: AccountId(r.get(1)?),
        name: r.get(2)?,
        prefix: r.get(3)?,
        hash: h,
        created_at: Timestamp::from_millis(r.get(5)?),
        revoked_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
    })
}

pub fn find_key(conn: &Connection, hash: &[u8; 32]) -> Result<Option<ApiKey>, StoreError> {
    conn.prepare_cached(
        "SELECT id, account_id, name, prefix, hash, created_at, revoked_at FROM api_keys
         WHERE hash = ?1 AND revoked_at IS NULL",
    )
    .and_then(|mut st| st.query_row(params![&hash[..]], key_row).optional())
    .map_err(internal)
}

pub fn revoke_key(conn: &Connection, id: KeyId, at: Timestamp) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id.as_uuid(), at.millis()],
    )
    .map(|n| n > 0)
    .map_err(internal)
}

pub fn store_seal(conn: &Connection, key: KeyId, sealed: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO api_key_seals (key_id, sealed) VALUES (?1, ?2)
         ON CONFLICT (key_id) DO UPDATE SET sealed = excluded.sealed",
        params![key.as_uuid(), sealed],
    )
    .map(|_| ())
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            Error::not_found(codes::KEY_NOT_FOUND, format!("Key {key} not found")).into()
        }
        e => internal(e),
    })
}

pub fn seals(conn: &Connection, account: AccountId) -> Result<Vec<Vec<u8>>, StoreError> {
    conn.prepare_cached(
        "SELECT s.sealed FROM api_key_seals s JOIN api_keys k ON k.id = s.key_id
         WHERE k.account_id = ?1 AND k.revoked_at IS NULL
         ORDER BY k.created_at, k.id",
    )
    .and_then(|mut st| {
        st.query_map(params![account.as_uuid()], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(internal)
}
