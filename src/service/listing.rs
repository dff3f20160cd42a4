//! Listings: tags of a repository, the catalog, referrers of a manifest.

use super::Registry;
use crate::error::Error;
use crate::meta::Referrer;
use crate::oci::{Digest, RepoName};

/// Page size when the client gives no `n`.
const DEFAULT_PAGE: u32 = 1000;
/// The largest page served, whatever `n` asks.
const MAX_PAGE: u32 = 10_000;

/// One page of a sorted listing.
#[derive(Debug)]
pub struct Page {
    /// The entries, sorted.
    pub items: Vec<String>,
    /// True when more entries follow the last one.
    pub more: bool,
    /// The page size that was applied.
    pub n: u32,
}

fn page_size(n: Option<u32>) -> u32 {
    n.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE)
}

fn to_page(mut items: Vec<String>, n: u32) -> Page {
    let more = items.len() > n as usize;
    items.truncate(n as usize);
    Page { items, more, n }
}

impl Registry {
    /// end-8a/8b: tags of `repo` after `last`, lexically sorted.
    pub async fn tags(&self, repo: &RepoName, n: Option<u32>, last: Option<&str>) -> Result<Page, Error> {
        if !self.meta.repository_exists(repo).await? {
            return Err(Error::NameUnknown(repo.clone()));
        }
        let n = page_size(n);
        if n == 0 {
            return Ok(Page { items: vec![], more: false, n });
        }
        Ok(to_page(self.meta.tags(repo, last, n + 1).await?, n))
    }

    /// `/v2/_catalog`: repositories after `last`, sorted.
    pub async fn catalog(&self, n: Option<u32>, last: Option<&str>) -> Result<Page, Error> {
        let n = page_size(n);
        if n == 0 {
            return Ok(Page { items: vec![], more: false, n });
        }
        Ok(to_page(self.meta.repositories(last, n + 1).await?, n))
    }

    /// end-12a/12b: manifests in `repo` whose subject is `subject`.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, Error> {
        Ok(self.meta.referrers(repo, subject, artifact_type).await?)
    }
}
