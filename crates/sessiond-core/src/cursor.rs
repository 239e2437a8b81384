//! Opaque keyset cursors for `createdAt desc, id desc` listings.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use crate::error::codes;
use crate::{Error, Timestamp};

/// The position after which the next page starts: the last row's `(createdAt, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: Timestamp,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v1:{}:{}",
            self.created_at.millis(),
            self.id.simple()
        ))
    }

    pub fn decode(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::bad_request(
                codes::INVALID_CURSOR,
                "cursor is malformed: pass back the nextCursor of a previous page unchanged",
            )
        };
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let text = std::str::from_utf8(&raw).map_err(|_| bad())?;
        let mut parts = text.splitn(3, ':');
        if parts.next() != Some("v1") {
            return Err(bad());
        }
        let ms: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let id = parts
            .next()
            .and_then(|p| Uuid::try_parse(p).ok())
            .ok_or_else(bad)?;
        Ok(Cursor {
            created_at: Timestamp::from_millis(ms),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at: Timestamp::from_millis(1_764_000_000_123),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "!!", "djE6eDp5", &URL_SAFE_NO_PAD.encode("v2:1:abc")] {
            let e = Cursor::decode(bad).unwrap_err();
            assert_eq!(e.code, codes::INVALID_CURSOR, "{bad}");
        }
    }
}
