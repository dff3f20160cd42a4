//! Listings: tags of a repository, the catalog, referrers of a manifest.

use std::sync::Arc;

use super::Registry;
use crate::error::Error;
use crate::meta::Referrer;
use crate::oci::{Digest, RepoName};

/// Page size when the client gives no `n`.
const DEFAULT_PAGE: u32 = 1000;
/// The largest page served, whatever `n` asks.
const MAX_PAGE: u32 = 10_000;

/// One page of a sorted listing: a window on a shared list (tags lists come from the
/// cache without copying).
#[derive(Debug)]
pub struct Page {
    all: Arc<Vec<String>>,
    range: std::ops::Range<usize>,
    /// True when more entries follow the last one.
    pub more: bool,
    /// The page size that was applied.
    pub n: u32,
}

impl Page {
    /// The entries, sorted.
    pub fn items(&self) -> &[String] {
        &self.all[self.range.clone()]
    }
}

fn page_size(n: Option<u32>) -> u32 {
    n.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE)
}

fn to_page(items: Vec<String>, n: u32) -> Page {
    let more = items.len() > n as usize;
    let end = items.len().min(n as usize);
    Page { all: Arc::new(items), range: 0..end, more, n }
}

impl Registry {
    /// end-8a/8b: tags of `repo` after `last`, lexically sorted.
    pub async fn tags(&self, repo: &RepoName, n: Option<u32>, last: Option<&str>) -> Result<Page, Error> {
        let all = match self.cache.tags(repo) {
            Some(all) => all,
            None => {
                let ticket = self.cache.ticket();
                if !self.meta.repository_exists(repo).await? {
                    return Err(Error::NameUnknown(repo.clone()));
                }
                let all = Arc::new(self.meta.tags(repo).await?);
                self.cache.put_tags(ticket, repo, all.clone());
                all
            }
        };
        let n = page_size(n);
        let start = last.map_or(0, |l| all.partition_point(|t| t.as_str() <= l));
        let end = all.len().min(start + n as usize);
        Ok(Page { more: end < all.len() && n > 0, range: start..end, all, n })
    }

    /// `/v2/_catalog`: repositories after `last` for which `visible` holds, sorted.
    pub async fn catalog(
        &self,
        n: Option<u32>,
        last: Option<&str>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Page, Error> {
        let n = page_size(n);
        if n == 0 {
            return Ok(to_page(vec![], 0));
        }
        let mut items = Vec::new();
        let mut cursor = last.map(str::to_string);
        loop {
            let batch = self.meta.repositories(cursor.as_deref(), n + 1).await?;
            let exhausted = batch.len() <= n as usize;
            cursor = batch.last().cloned();
            items.extend(batch.into_iter().filter(|r| visible(r)));
            if exhausted || items.len() > n as usize {
                break;
            }
        }
        Ok(to_page(items, n))
    }

    /// end-12a/12b: manifests in `repo` whose subject is `subject`.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, Error> {
        let all = match self.cache.referrers(repo, subject) {
            Some(all) => all,
            None => {
                let ticket = self.cache.ticket();
                let all = Arc::new(self.meta.referrers(repo, subject).await?);
                self.cache.put_referrers(ticket, repo, subject, all.clone());
                all
            }
        };
        Ok(all
            .iter()
            .filter(|r| artifact_type.is_none_or(|t| r.artifact_type.as_deref() == Some(t)))
            .cloned()
            .collect())
    }
}
