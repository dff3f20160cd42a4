//! Query parameters of `/api/v1`, decoded once and read as typed values: `limit` (1 to
//! 1000, default 100), `cursor` (the `next_cursor` of the previous page), RFC 3339 times,
//! names, tags, digests and ledger actions. A value that does not parse is a 400 naming it.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::IntoParams;

use crate::audit::EventKind;
use crate::error::Error;
use crate::oci::{Digest, RepoName, Tag};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest page.
pub const MAX_LIMIT: u32 = 1000;

/// Decoded query parameters, in order; the first value of a repeated key counts.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes a raw query string.
    pub fn parse(raw: Option<&str>) -> Params {
        Params(url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect())
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `limit`: a whole number from 1 to [`MAX_LIMIT`].
    pub fn limit(&self) -> Result<u32, Error> {
        match self.get("limit") {
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n) && l.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| Error::Unsupported(format!("limit={l:?}: use a whole number from 1 to {MAX_LIMIT}"))),
            None => Ok(DEFAULT_LIMIT),
        }
    }

    /// `cursor` of listings ordered by a number (ledger seq, history id).
    pub fn number_cursor(&self) -> Result<Option<i64>, Error> {
        self.get("cursor")
            .map(|c| {
                c.parse::<i64>()
                    .ok()
                    .filter(|_| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| Error::Unsupported(format!("cursor={c:?} is not a cursor this API gave")))
            })
            .transpose()
    }

    /// `cursor` of listings ordered by repository name.
    pub fn name_cursor(&self) -> Result<Option<RepoName>, Error> {
        self.get("cursor")
            .map(|c| {
                RepoName::parse(c)
                    .map_err(|_| Error::Unsupported(format!("cursor={c:?} is not a cursor this API gave")))
            })
            .transpose()
    }

    /// An RFC 3339 time.
    pub fn time(&self, key: &str) -> Result<Option<SystemTime>, Error> {
        self.get(key)
            .map(|s| {
                // RFC 3339 §5.6 allows a lowercase `t` and `z`.
                OffsetDateTime::parse(&s.to_ascii_uppercase(), &Rfc3339).map(SystemTime::from).map_err(|e| {
                    Error::Unsupported(format!("{key}={s:?} is not an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"))
                })
            })
            .transpose()
    }

    /// A repository name.
    pub fn repo(&self, key: &str) -> Result<Option<RepoName>, Error> {
        self.get(key).map(|s| RepoName::parse(s).map_err(Error::from)).transpose()
    }

    /// A tag.
    pub fn tag(&self, key: &str) -> Result<Option<Tag>, Error> {
        self.get(key).map(|s| Tag::parse(s).map_err(Error::from)).transpose()
    }

    /// A digest.
    pub fn digest(&self, key: &str) -> Result<Option<Digest>, Error> {
        self.get(key).map(|s| Digest::parse(s).map_err(Error::from)).transpose()
    }

    /// A ledger action (`tag.move`, …).
    pub fn action(&self, key: &str) -> Result<Option<EventKind>, Error> {
        self.get(key)
            .map(|s| {
                EventKind::parse(s)
                    .ok_or_else(|| Error::Unsupported(format!("{key}={s:?} is not a ledger action (such as tag.move)")))
            })
            .transpose()
    }

    /// A non-empty text of at most 255 characters (an actor name).
    pub fn text(&self, key: &str) -> Result<Option<&str>, Error> {
        self.get(key)
            .map(|s| match s.is_empty() || s.chars().count() > 255 {
                true => Err(Error::Unsupported(format!("{key} must be 1 to 255 characters"))),
                false => Ok(s),
            })
            .transpose()
    }
}

/// `limit` and `cursor` of a listing ordered by a number (ledger seq, history id).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page size.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<i64>,
}

impl Paging {
    /// Reads both.
    pub fn parse(q: &Params) -> Result<Paging, Error> {
        Ok(Paging { limit: q.limit()?, cursor: q.number_cursor()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_and_their_errors() {
        let p = Params::parse(Some("limit=5&cursor=12&since=2026-01-31T12:00:00%2B02:00&action=tag.move&limit=7"));
        assert_eq!(p.limit().unwrap(), 5, "the first value counts");
        assert_eq!(p.number_cursor().unwrap(), Some(12));
        assert!(p.time("since").unwrap().is_some());
        assert_eq!(p.action("action").unwrap(), Some(EventKind::TagMove));
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=%2B5", "limit=x", "limit="] {
            assert!(Params::parse(Some(bad)).limit().is_err(), "{bad}");
        }
        for bad in ["cursor=-1", "cursor=x", "cursor=", "cursor=%2B1"] {
            assert!(Params::parse(Some(bad)).number_cursor().is_err(), "{bad}");
        }
        assert!(Params::parse(Some("since=yesterday")).time("since").is_err());
        for ok in ["2026-01-31t12:00:00z", "2026-12-31T23:59:60Z", "2026-01-31T12:00:00.123456789-05:30"] {
            assert!(
                Params::parse(Some(&format!("at={}", ok.replace('+', "%2B")))).time("at").unwrap().is_some(),
                "{ok}"
            );
        }
        assert!(Params::parse(Some("action=tag.teleport")).action("action").is_err());
        assert_eq!(Params::parse(None).limit().unwrap(), DEFAULT_LIMIT);
    }
}
