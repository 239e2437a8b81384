use sessiond_core::account::{Account, ApiKey};
use sessiond_core::error::codes;
use sessiond_core::{AccountId, Error, KeyId, Timestamp};
use sessiond_store::StoreError;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{db_err, sqlstate, FOREIGN_KEY_VIOLATION, UNIQUE_VIOLATION};

pub async fn ensure(conn: &mut PgConnection, a: &Account) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(a.id.0)
    .bind(&a.name)
    .bind(a.created_at.millis())
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(db_err)
}

pub async fn create(conn: &mut PgConnection, a: Account) -> Result<Account, StoreError> {
    let r = sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(a.id.0)
        .bind(&a.name)
        .bind(a.created_at.millis())
        .execute(conn)
        .await;
    match r {
        Ok(_) => Ok(a),
        Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => Err(Error::conflict(
            codes::ACCOUNT_EXISTS,
            format!("Account {} already exists", a.id),
        )
        .into()),
        Err(e) => Err(db_err(e)),
    }
}

pub async fn get(conn: &mut PgConnection, id: AccountId) -> Result<Option<Account>, StoreError> {
    let row = sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = $1")
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.map(|r| {
        Ok(Account {
            id: AccountId(r.try_get(0)?),
            name: r.try_get(1)?,
            created_at: Timestamp::from_millis(r.try_get(2)?),
        })
    })
    .transpose()
    .map_err(db_err)
}

fn account_not_found(id: AccountId) -> StoreError {
    Error::not_found(codes::ACCOUNT_NOT_FOUND, format!("Account {id} not found")).into()
}

/// Runs in a transaction: the account check and the insert see the same account.
pub async fn create_key(conn: &mut PgConnection, k: ApiKey) -> Result<ApiKey, StoreError> {
    // Lock the account (shared) so it cannot vanish between the check and the insert.
    let exists = sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE")
        .bind(k.account_id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?
        .is_some();
    if !exists {
        return Err(account_not_found(k.account_id));
    }
    let r = sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, prefix, hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(k.id.0)
    .bind(k.account_id.0)
    .bind(&k.name)
    .bind(&k.prefix)
    .bind(&k.hash[..])
    .bind(k.created_at.millis())
    .execute(&mut *conn)
    .await;
    match r {
        Ok(_) => Ok(k),
        Err(e) => match sqlstate(&e).as_deref() {
            Some(UNIQUE_VIOLATION) => Err(Error::conflict(
                codes::KEY_EXISTS,
                "this key secret is already registered",
            )
            .into()),
            Some(FOREIGN_KEY_VIOLATION) => Err(account_not_found(k.account_id)),
            _ => Err(db_err(e)),
        },
    }
}

fn key_row(r: &PgRow) -> Result<ApiKey, sqlx::Error> {
    let hash: Vec<u8> = r.try_get(4)?;
    let mut h = [0u8; 32];
    if hash.len() == 32 {
        h.copy_from_slice(&hash);
    }
    Ok(ApiKey {
        id: KeyId(r.try_get::<Uuid, _>(0)?),
        account_id: AccountId(r.try_get(1)?),
        name: r.try_get(2)?,
        prefix: r.try_get(3)?,
        hash: h,
        created_at: Timestamp::from_millis(r.try_get(5)?),
        revoked_at: r.try_get::<Option<i64>, _>(6)?.map(Timestamp::from_millis),
    })
}

pub async fn find_key(
    conn: &mut PgConnection,
    hash: &[u8; 32],
) -> Result<Option<ApiKey>, StoreError> {
    let row = sqlx::query(
        "SELECT id, account_id, name, prefix, hash, created_at, revoked_at FROM api_keys
         WHERE hash = $1 AND revoked_at IS NULL",
    )
    .bind(&hash[..])
    .fetch_optional(conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(key_row).transpose().map_err(db_err)
}

pub async fn revoke_key(
    conn: &mut PgConnection,
    id: KeyId,
    at: Timestamp,
) -> Result<bool, StoreError> {
    sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id.0)
        .bind(at.millis())
        .execute(conn)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(db_err)
}

pub async fn store_seal(
    conn: &mut PgConnection,
    key: KeyId,
    sealed: &[u8],
) -> Result<(), StoreError> {
    let r = sqlx::query(
        "INSERT INTO api_key_seals (key_id, sealed) VALUES ($1, $2)
         ON CONFLICT (key_id) DO UPDATE SET sealed = excluded.sealed",
    )
    .bind(key.0)
    .bind(sealed)
    .execute(conn)
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if sqlstate(&e).as_deref() == Some(FOREIGN_KEY_VIOLATION) => {
            Err(Error::not_found(codes::KEY_NOT_FOUND, format!("Key {key} not found")).into())
        }
        Err(e) => Err(db_err(e)),
    }
}

pub async fn seals(
    conn: &mut PgConnection,
    account: AccountId,
) -> Result<Vec<Vec<u8>>, StoreError> {
    sqlx::query_scalar(
        "SELECT s.sealed FROM api_key_seals s JOIN api_keys k ON k.id = s.key_id
         WHERE k.account_id = $1 AND k.revoked_at IS NULL
         ORDER BY k.created_at, k.id",
    )
    .bind(account.0)
    .fetch_all(conn)
    .await
    .map_err(db_err)
}
