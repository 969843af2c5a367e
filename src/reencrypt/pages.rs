//! Listing the selected Secrets of a namespace in pages, so that neither the run nor the
//! scan ever holds every Secret (and every value in them) in memory at once.
//!
//! A page is read as a stream: its response body is split as it arrives into the JSON
//! of each Secret, and each is parsed on its own and handed to the caller's `keep`,
//! which makes of it what the caller needs (a count, the Secret itself, a name) before
//! the next one is parsed. So
//! what a page costs in memory is one Secret and what `keep` keeps, however large the
//! page's Secrets are: a namespace of hundreds of near-1 MiB Secrets matching the
//! selector (Helm releases, or Secrets anyone may create and label) costs the scan one
//! Secret at a time, not a buffered response of hundreds of megabytes.
//!
//! It owns the continue tokens and one rule: a continue token the API server no longer
//! honours (`410 Gone`, its snapshot compacted away while a slow, throttled page was
//! being rewritten) starts the listing again from the first page. That is safe only
//! for callers that are idempotent or start over themselves, which is why every page
//! says whether it is the first of a listing. It never decides on Secret data, and no
//! error it returns quotes any: a Secret that does not parse is named by its place.

use futures::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::ListParams;
use kube::{Client, Resource};
use zeroize::Zeroize;

/// One page: what `keep` made of each of its Secrets, in order, where it kept anything.
pub struct Page<T> {
    pub items: Vec<T>,
    /// The first page of a listing, the very first or one started again after an
    /// expired continue token: whatever was counted from earlier pages is stale.
    pub first: bool,
}

/// The Secrets matching a label selector, a page at a time.
pub struct Pager {
    client: Client,
    url_path: String,
    params: ListParams,
    /// Where the next page starts; `None` before the first page.
    next: Option<String>,
    finished: bool,
    /// How many times the listing started again.
    pub restarts: u32,
}

impl Pager {
    /// Pages of at most `limit` Secrets (at least 1) of `namespace` matching `selector`.
    pub fn new(client: Client, namespace: &str, selector: &str, limit: u32) -> Self {
        Self {
            client,
            url_path: Secret::url_path(&(), Some(namespace)),
            params: ListParams::default().labels(selector).limit(limit.max(1)),
            next: None,
            finished: false,
            restarts: 0,
        }
    }

    /// The next page, with what `keep` makes of each of its Secrets, or `None` once the
    /// listing is complete. `keep` runs as the page is parsed.
    pub async fn next<T, F>(&mut self, keep: F) -> Result<Option<Page<T>>, kube::Error>
    where
        F: FnMut(Secret) -> Option<T>,
    {
        while !self.finished {
            let mut params = self.params.clone();
            if let Some(token) = &self.next {
                params = params.continue_token(token);
            }
            let request = kube::core::Request::new(&self.url_path)
                .list(&params)
                .map_err(kube::Error::BuildRequest)?;
            match self.client.request_stream(request).await {
                Ok(body) => {
                    let first = self.next.is_none();
                    let (items, continue_token) = read_list(body, keep).await?;
                    self.next = continue_token.filter(|token| !token.is_empty());
                    self.finished = self.next.is_none();
                    return Ok(Some(Page { items, first }));
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

/// Parses the SecretList streaming in on `body`, keeping what `keep` makes of each
/// Secret; returns that and the list's continue token.
async fn read_list<T, F>(
    body: impl AsyncBufRead,
    mut keep: F,
) -> Result<(Vec<T>, Option<String>), kube::Error>
where
    F: FnMut(Secret) -> Option<T>,
{
    let mut body = std::pin::pin!(body);
    let mut splitter = Splitter::default();
    let mut items = Vec::new();
    let mut items_seen = 0usize;
    let mut found = |json: &[u8]| {
        // serde's messages may quote the value they refused: only the place is kept.
        let secret: Secret = serde_json::from_slice(json).map_err(|error| {
            malformed(&format!(
                "listed Secret {} does not parse ({:?} error at column {})",
                items_seen + 1,
                error.classify(),
                error.column()
            ))
        })?;
        items_seen += 1;
        items.extend(keep(secret));
        Ok(())
    };
    loop {
        let chunk = body.fill_buf().await.map_err(kube::Error::ReadEvents)?;
        if chunk.is_empty() {
            break;
        }
        let length = chunk.len();
        splitter
            .feed(chunk, &mut found)
            .map_err(kube::Error::SerdeError)?;
        body.as_mut().consume(length);
    }
    let skeleton = splitter.finish().map_err(kube::Error::SerdeError)?;
    Ok((
        items,
        skeleton.metadata.and_then(|metadata| metadata.continue_),
    ))
}

/// Most JSON one listed Secret may take: well above what etcd stores for one object
/// (1.5 MiB, base64 adds a third), so that no real Secret meets it and no response can
/// make one item's buffer grow without bound.
const MAX_ITEM_BYTES: usize = 16 * 1024 * 1024;
/// Most JSON a list's own fields (everything but its items) may take.
const MAX_SKELETON_BYTES: usize = 64 * 1024;

/// A SecretList without its items: what is left to read once they are handed over.
#[derive(serde::Deserialize)]
struct Skeleton {
    metadata: Option<ListMeta>,
}

/// Where a byte of the list goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// The list's own fields, `items: [` and `]` included.
    Skeleton,
    /// The item being read.
    Item,
    /// Whitespace and commas between items.
    Neither,
}

/// Splits a SecretList's JSON, as it streams in, into the JSON of each of its `items`
/// and the rest of the list (its skeleton, the items left out), tracking only strings
/// and nesting. It checks the structure it relies on; the JSON of each item and of the
/// skeleton is checked by the parser they go to.
#[derive(Default)]
struct Splitter {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The start of the last string of the list's own object, raw: the key of the value
    /// that follows it.
    key: Vec<u8>,
    /// Inside the `items` array.
    in_items: bool,
    item: Vec<u8>,
    skeleton: Vec<u8>,
}

/// The beginning of the `items` key, as `key` records it.
const ITEMS_KEY: &[u8] = b"items";

impl Splitter {
    /// Takes in `chunk`, handing each item completed in it to `found`.
    fn feed(
        &mut self,
        chunk: &[u8],
        found: &mut impl FnMut(&[u8]) -> Result<(), serde_json::Error>,
    ) -> Result<(), serde_json::Error> {
        // Bytes go to their sink in runs, not one at a time.
        let mut run: Option<(Sink, usize)> = None;
        let mut index = 0;
        while index < chunk.len() {
            if self.in_string && !self.escaped {
                // Most of a list is string content (base64 data): skipped at memchr's
                // speed up to the next quote or backslash.
                let rest = &chunk[index..];
                let content = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                if self.depth == 1 {
                    let room = (ITEMS_KEY.len() + 1).saturating_sub(self.key.len());
                    self.key.extend_from_slice(&rest[..content.min(room)]);
                }
                if run.is_none() {
                    run = Some((self.sink(), index));
                }
                index += content;
                if index == chunk.len() {
                    break;
                }
            }
            let byte = chunk[index];
            let (sink, closes_item) = self.step(byte).map_err(malformed)?;
            match run {
                Some((current, _)) if current == sink => {}
                _ => {
                    if let Some((current, from)) = run {
                        self.take(current, &chunk[from..index])?;
                    }
                    run = Some((sink, index));
                }
            }
            if closes_item && let Some((current, from)) = run.take() {
                self.take(current, &chunk[from..=index])?;
                let handed = found(&self.item);
                self.item.zeroize();
                handed?;
            }
            index += 1;
        }
        if let Some((current, from)) = run {
            self.take(current, &chunk[from..])?;
        }
        Ok(())
    }

    /// Appends `bytes` to `sink`, within its bound.
    fn take(&mut self, sink: Sink, bytes: &[u8]) -> Result<(), serde_json::Error> {
        let (buffer, bound, what) = match sink {
            Sink::Neither => return Ok(()),
            Sink::Item => (
                &mut self.item,
                MAX_ITEM_BYTES,
                "a listed Secret exceeds 16 MiB of JSON",
            ),
            Sink::Skeleton => (
                &mut self.skeleton,
                MAX_SKELETON_BYTES,
                "the list's own fields exceed 64 KiB of JSON",
            ),
        };
        if buffer.len() + bytes.len() > bound {
            return Err(malformed(what));
        }
        buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// Where the bytes go at the current nesting.
    fn sink(&self) -> Sink {
        match (self.in_items, self.depth) {
            (true, 2) => Sink::Neither,
            (true, _) => Sink::Item,
            (false, _) => Sink::Skeleton,
        }
    }

    /// Reads one byte: where it goes, and whether it closes an item.
    fn step(&mut self, byte: u8) -> Result<(Sink, bool), &'static str> {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            } else if self.depth == 1 && self.key.len() <= ITEMS_KEY.len() {
                self.key.push(byte);
            }
            return Ok((self.sink(), false));
        }
        if self.in_items && self.depth == 2 {
            return match byte {
                b'{' => {
                    self.depth = 3;
                    Ok((Sink::Item, false))
                }
                b']' => {
                    self.in_items = false;
                    self.depth = 1;
                    Ok((Sink::Skeleton, false))
                }
                b',' | b' ' | b'\n' | b'\r' | b'\t' => Ok((Sink::Neither, false)),
                _ => Err("an item of the list is not an object"),
            };
        }
        match byte {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 {
                    self.key.clear();
                }
            }
            b'[' if self.depth == 1 && self.key == ITEMS_KEY => {
                self.in_items = true;
                self.depth = 2;
                return Ok((Sink::Skeleton, false));
            }
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth = self
                    .depth
                    .checked_sub(1)
                    .ok_or("a bracket closes nothing")?;
                if self.in_items && self.depth == 2 {
                    return Ok((Sink::Item, true));
                }
            }
            _ => {}
        }
        Ok((self.sink(), false))
    }

    /// The skeleton, once the whole list was fed.
    fn finish(self) -> Result<Skeleton, serde_json::Error> {
        if self.depth != 0 || self.in_string || self.in_items {
            return Err(malformed("the list ends before it is complete"));
        }
        serde_json::from_slice(&self.skeleton)
    }
}

impl Drop for Splitter {
    fn drop(&mut self) {
        // An item abandoned midway holds Secret data too.
        self.item.zeroize();
    }
}

fn malformed(what: &str) -> serde_json::Error {
    <serde_json::Error as serde::de::Error>::custom(what)
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

    /// `text` as a response body arriving in pieces of `piece` bytes.
    fn body(text: &str, piece: usize) -> impl AsyncBufRead {
        let pieces: Vec<std::io::Result<Vec<u8>>> = text
            .as_bytes()
            .chunks(piece)
            .map(|bytes| Ok(bytes.to_vec()))
            .collect();
        futures::TryStreamExt::into_async_read(futures::stream::iter(pieces))
    }

    fn names(secret: Secret) -> Option<String> {
        secret.metadata.name
    }

    #[tokio::test]
    async fn a_streamed_list_hands_over_each_secret_and_the_continue_token() {
        let list = r#"{"kind":"SecretList","apiVersion":"v1",
            "metadata":{"resourceVersion":"7","continue":"next-page"},
            "items":[{"metadata":{"name":"a"},"data":{"v":"eA=="}},
                     {"metadata":{"name":"b"},"type":"Opaque","extra":[1,{"x":null}]}]}"#;
        for piece in [1, 7, list.len()] {
            let (items, token) = read_list(body(list, piece), names).await.expect("parses");
            assert_eq!(items, ["a", "b"], "in pieces of {piece}");
            assert_eq!(token.as_deref(), Some("next-page"));
        }
        let (items, token) = read_list(body(r#"{"metadata":{},"items":null}"#, 3), |_: Secret| {
            Some(())
        })
        .await
        .expect("parses");
        assert!(items.is_empty() && token.is_none());
    }

    #[tokio::test]
    async fn only_what_keep_returns_is_kept() {
        let list =
            r#"{"metadata":{},"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}"#;
        let (items, _) = read_list(body(list, 5), |secret: Secret| {
            names(secret).filter(|name| name == "b")
        })
        .await
        .expect("parses");
        assert_eq!(items, ["b"]);
    }

    #[tokio::test]
    async fn a_truncated_or_malformed_list_is_an_error_not_a_short_page() {
        for broken in [
            r#"{"metadata":{},"items":[{"metadata":{"name":"a"}},"#,
            r#"{"metadata":{},"items":[{"metadata":{"name":"a"}}]} trailing"#,
            r#"{"metadata":{},"items":[{"metadata":{"name":7}}]}"#,
            "",
        ] {
            let result = read_list(body(broken, 4), names).await;
            assert!(
                matches!(result, Err(kube::Error::SerdeError(_))),
                "{broken:?} was taken for a list"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the names, labels and values hold (quotes, backslashes, brackets,
        /// a key named `items`) and wherever the body is cut into chunks, the streamed
        /// list yields exactly what parsing it whole does.
        #[test]
        fn a_list_split_anywhere_reads_as_parsed_whole(
            secrets in proptest::collection::vec(
                ("[a-z0-9.-]{1,12}", "[\\[\\]{}\"\\\\:, a-zA-Z0-9]{0,24}", proptest::collection::vec(proptest::num::u8::ANY, 0..48)),
                0..6,
            ),
            token in proptest::option::of("[a-zA-Z0-9\"\\\\{}\\[\\]]{1,16}"),
            piece in 1usize..64,
        ) {
            let items: Vec<serde_json::Value> = secrets
                .iter()
                .map(|(name, label, data)| {
                    serde_json::json!({
                        "metadata": {"name": name, "labels": {"items": label, "x]": "{"}},
                        "data": {"items": k8s_openapi::ByteString(data.clone())},
                        "type": label,
                    })
                })
                .collect();
            let list = serde_json::json!({
                "kind": "SecretList",
                "apiVersion": "v1",
                "metadata": {"continue": token, "resourceVersion": "9"},
                "items": items,
            });
            let text = serde_json::to_string_pretty(&list).expect("serializes");
            let whole: k8s_openapi::List<Secret> = serde_json::from_str(&text).expect("parses");
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let (streamed, streamed_token) = runtime
                .block_on(read_list(body(&text, piece), Some))
                .expect("streams");
            proptest::prop_assert_eq!(streamed, whole.items);
            proptest::prop_assert_eq!(streamed_token, token);
        }
    }

    #[tokio::test]
    async fn a_secret_that_does_not_parse_is_named_by_its_place_never_quoted() {
        let list = r#"{"metadata":{},"items":[{"metadata":{"name":"a"}},
            {"metadata":{"name":"b"},"data":{"v":"hunter2-not-base64!"}}]}"#;
        let error = read_list(body(list, 8), names)
            .await
            .expect_err("invalid base64 is refused")
            .to_string();
        assert!(error.contains("listed Secret 2 does not parse"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn a_body_that_fails_midway_is_an_error() {
        let pieces = vec![
            Ok(br#"{"metadata":{},"items":["#.to_vec()),
            Err(std::io::Error::other("connection reset")),
        ];
        let failing = futures::TryStreamExt::into_async_read(futures::stream::iter(pieces));
        assert!(read_list(failing, names).await.is_err());
    }
}
