//! Identifier newtypes: parsed once at the edge, carried typed everywhere else.

use std::fmt;

use uuid::Uuid;

#[macro_export]
#[doc(hidden)]
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub ::uuid::Uuid);

        impl $name {
            pub fn random() -> Self {
                Self(::uuid::Uuid::new_v4())
            }
            pub fn as_uuid(&self) -> &::uuid::Uuid {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                ::uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl From<::uuid::Uuid> for $name {
            fn from(u: ::uuid::Uuid) -> Self {
                Self(u)
            }
        }
    };
}

pub(crate) use uuid_id;

uuid_id!(
    /// An account: the owner of sessions and API keys.
    AccountId
);
uuid_id!(
    /// A session's server-side id (UUID v4 unless the caller chose one).
    SessionId
);
uuid_id!(
    /// An API key's public id (the secret itself is never stored).
    KeyId
);

impl AccountId {
    /// The account that open mode (auth off, loopback only) acts as.
    pub const DEFAULT: AccountId = AccountId(Uuid::nil());
}

/// How a path segment names a session: its UUID, or its `externalId` when the segment is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRef {
    Id(SessionId),
    External(String),
}

impl SessionRef {
    pub fn parse(segment: &str) -> Self {
        match Uuid::parse_str(segment) {
            Ok(u) => SessionRef::Id(SessionId(u)),
            Err(_) => SessionRef::External(segment.to_owned()),
        }
    }
}

impl fmt::Display for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionRef::Id(id) => id.fmt(f),
            SessionRef::External(e) => f.write_str(e),
        }
    }
}

impl From<SessionId> for SessionRef {
    fn from(id: SessionId) -> Self {
        SessionRef::Id(id)
    }
}
