//! Listing the selected Secrets of a namespace in pages, so that neither the run nor the
//! scan ever holds every Secret (and every value in them) in memory at once.
//!
//! It owns the continue tokens and one rule: a continue token the API server no longer
//! honours (`410 Gone`, its snapshot compacted away while a slow, throttled page was
//! being rewritten) starts the listing again from the first page. That is safe only
//! for callers that are idempotent or start over themselves, which is why every page
//! says whether it is the first of a listing. It never reads or decides on Secret data.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};

/// One page of Secrets.
pub struct Page {
    pub items: Vec<Secret>,
    /// The first page of a listing, the very first or one started again after an
    /// expired continue token: whatever was counted from earlier pages is stale.
    pub first: bool,
}

/// The Secrets matching a label selector, a page at a time.
pub struct Pager {
    secrets: Api<Secret>,
    params: ListParams,
    /// Where the next page starts; `None` before the first page.
    next: Option<String>,
    finished: bool,
    /// How many times the listing started again.
    pub restarts: u32,
}

impl Pager {
    /// Pages of at most `limit` Secrets matching `selector` (at least 1).
    pub fn new(secrets: Api<Secret>, selector: &str, limit: u32) -> Self {
        Self {
            secrets,
            params: ListParams::default().labels(selector).limit(limit.max(1)),
            next: None,
            finished: false,
            restarts: 0,
        }
    }

    /// The next page, or `None` once the listing is complete.
    pub async fn next(&mut self) -> Result<Option<Page>, kube::Error> {
        while !self.finished {
            let mut params = self.params.clone();
            if let Some(token) = &self.next {
                params = params.continue_token(token);
            }
            match self.secrets.list(&params).await {
                Ok(list) => {
                    let first = self.next.is_none();
                    self.next = list.metadata.continue_.filter(|token| !token.is_empty());
                    self.finished = self.next.is_none();
                    return Ok(Some(Page {
                        items: list.items,
                        first,
                    }));
                }
                Err(error) if starts_over(&error, self.next.is_some()) => {
                    tracing::warn!(
                        restarts = self.restarts + 1,
                        "the list's continue token expired; listing again from the first page"
                    );
                    self.restarts += 1;
                    self.next = None;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }
}

/// Whether a failed list request should start the listing again: only a `410 Gone` for
/// a continue token. A `410` without one is not an expired token and is reported.
fn starts_over(error: &kube::Error, continuing: bool) -> bool {
    continuing && matches!(error, kube::Error::Api(status) if status.code == 410)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            Status::failure("expired", "Expired")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_an_expired_continue_token_starts_the_listing_over() {
        assert!(starts_over(&api_error(410), true));
        assert!(!starts_over(&api_error(410), false), "no token: not expiry");
        assert!(!starts_over(&api_error(500), true));
        assert!(!starts_over(&api_error(409), true));
    }
}
