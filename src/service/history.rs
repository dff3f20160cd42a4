//! Tag history: every create, move and delete of a tag, and what a tag pointed to at a
//! given moment.

use std::time::SystemTime;

use super::Registry;
use crate::error::Error;
use crate::meta::TagEvent;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::policy::Decision;

/// One page of a tag's history, newest first.
#[derive(Debug)]
pub struct HistoryPage {
    /// The events.
    pub events: Vec<TagEvent>,
    /// Cursor for the next (older) page, if there is one.
    pub next: Option<i64>,
}

impl Registry {
    /// Events of `repo:tag` older than `cursor`, newest first, at most `limit`.
    pub async fn tag_history(
        &self,
        repo: &RepoName,
        tag: &Tag,
        cursor: Option<i64>,
        limit: u32,
    ) -> Result<HistoryPage, Error> {
        let mut events = self.meta.tag_history(repo, tag, cursor, limit + 1).await?;
        let next = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|e| e.id)
        } else {
            None
        };
        if events.is_empty() && cursor.is_none() {
            return Err(Error::ManifestUnknown(format!("{repo}:{tag} (no history: the tag never existed)")));
        }
        Ok(HistoryPage { events, next })
    }

    /// The digest `repo:tag` pointed to at `at` (`None` if it did not exist then, or had
    /// been deleted); with no `at`, the digest it points to now.
    pub async fn tag_digest(
        &self,
        repo: &RepoName,
        tag: &Tag,
        at: Option<SystemTime>,
    ) -> Result<Option<Digest>, Error> {
        match at {
            Some(at) => Ok(self.meta.tag_event_at(repo, tag, at).await?.and_then(|e| e.to)),
            None => Ok(self.meta.manifest(repo, &Reference::Tag(tag.clone())).await?.map(|m| m.digest)),
        }
    }

    /// How the immutability rules treat `repo:tag`.
    pub fn tag_rule(&self, repo: &RepoName, tag: &Tag) -> Decision {
        self.immutability.decide(repo, tag)
    }
}
