//! Replication policies: the name a source topic gets on the target, and what
//! a topic's name says about the clusters it was copied through.
//!
//! Every policy is a name template with `{topic}` and at most one `{source}`
//! (the flow's source cluster alias):
//!
//! - `identity` is `{topic}`: same names, as MirrorMaker 1 and active-passive
//!   disaster recovery want;
//! - `prefix` is `{source}<separator>{topic}`, MirrorMaker 2's
//!   DefaultReplicationPolicy (separator `.` by default);
//! - a custom template, such as `{topic}-{source}`.
//!
//! A template that names the source can be read backwards: `eu.orders` came
//! from cluster `eu` as `orders`, and `us.eu.orders` came from `us`, which had
//! it from `eu`. That chain is how loops are cut, as in MirrorMaker 2: a flow
//! never copies a topic whose chain contains its own target cluster, however
//! many clusters the ring has. A template without `{source}` cannot be read
//! backwards, so the configuration refuses it on any cycle of flows
//! (`config/flows.rs`).

use std::fmt;

/// One piece of a name template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Source,
    Topic,
}

/// How one flow names its target topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationPolicy {
    pieces: Vec<Piece>,
    /// The template as written, for messages.
    text: String,
}

impl ReplicationPolicy {
    /// Same names on the target as on the source.
    pub fn identity() -> Self {
        Self::template("{topic}").unwrap_or_else(|_| unreachable!("a valid template"))
    }

    /// `<source alias><separator><topic>`, MirrorMaker 2's default policy.
    pub fn prefix(separator: &str) -> Result<Self, String> {
        if separator.is_empty() {
            return Err("the separator must be non-empty".into());
        }
        Self::template(&format!("{{source}}{separator}{{topic}}"))
    }

    /// A template with `{topic}` once and `{source}` at most once. Between the
    /// two there must be some fixed text, or a name could not be read back.
    pub fn template(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (piece, len) = if let Some(after) = rest.strip_prefix("{topic}") {
                (Piece::Topic, rest.len() - after.len())
            } else if let Some(after) = rest.strip_prefix("{source}") {
                (Piece::Source, rest.len() - after.len())
            } else if rest.starts_with('{') || rest.starts_with('}') {
                return Err(format!(
                    "`{text}`: only {{topic}} and {{source}} can be used in braces"
                ));
            } else {
                let len = rest.find(['{', '}']).unwrap_or(rest.len());
                (Piece::Literal(rest[..len].to_owned()), len)
            };
            pieces.push(piece);
            rest = &rest[len..];
        }
        let count = |wanted: &Piece| pieces.iter().filter(|p| *p == wanted).count();
        if count(&Piece::Topic) != 1 {
            return Err(format!("`{text}` must contain {{topic}} exactly once"));
        }
        if count(&Piece::Source) > 1 {
            return Err(format!("`{text}` may contain {{source}} at most once"));
        }
        let adjacent = pieces.windows(2).any(|w| {
            matches!(
                w,
                [Piece::Source, Piece::Topic] | [Piece::Topic, Piece::Source]
            )
        });
        if adjacent {
            return Err(format!(
                "`{text}`: {{source}} and {{topic}} need fixed text between them (such as `.`), or names could not be read back"
            ));
        }
        Ok(ReplicationPolicy {
            pieces,
            text: text.to_owned(),
        })
    }

    /// Whether target names record the source cluster, so loops can be cut by name.
    pub fn names_source(&self) -> bool {
        self.pieces.contains(&Piece::Source)
    }

    /// Fixed text next to `{source}`, which a cluster alias must not contain
    /// for names to be read back unambiguously.
    pub fn separators(&self) -> Vec<&str> {
        let mut found = Vec::new();
        for (i, piece) in self.pieces.iter().enumerate() {
            if *piece != Piece::Source {
                continue;
            }
            for neighbour in [i.checked_sub(1), Some(i + 1)].into_iter().flatten() {
                if let Some(Piece::Literal(text)) = self.pieces.get(neighbour) {
                    found.push(text.as_str());
                }
            }
        }
        found
    }

    /// The target topic of `topic` copied from the cluster `source`.
    pub fn target_topic(&self, source: &str, topic: &str) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(text) => text.as_str(),
                Piece::Source => source,
                Piece::Topic => topic,
            })
            .collect()
    }

    /// The topic of cluster `source` whose copy this policy names `name`:
    /// the reverse of [`target_topic`](Self::target_topic), `None` when
    /// `name` is no such copy.
    pub fn source_topic<'a>(&self, source: &str, name: &'a str) -> Option<&'a str> {
        let at = self.pieces.iter().position(|p| *p == Piece::Topic)?;
        let text = |pieces: &[Piece]| -> String {
            pieces
                .iter()
                .map(|piece| match piece {
                    Piece::Literal(text) => text.as_str(),
                    Piece::Source => source,
                    Piece::Topic => "",
                })
                .collect()
        };
        let topic = name
            .strip_prefix(text(&self.pieces[..at]).as_str())?
            .strip_suffix(text(&self.pieces[at + 1..]).as_str())?;
        (!topic.is_empty()).then_some(topic)
    }

    /// The cluster a topic was copied from and its name there, when the name
    /// says so: `("eu", "orders")` for `eu.orders` under the prefix policy.
    pub fn upstream<'a>(&self, name: &'a str) -> Option<(&'a str, &'a str)> {
        let source_at = self.pieces.iter().position(|p| *p == Piece::Source)?;
        let topic_at = self.pieces.iter().position(|p| *p == Piece::Topic)?;
        let literal = |i: usize| match self.pieces.get(i) {
            Some(Piece::Literal(text)) => text.as_str(),
            _ => "",
        };
        let (first, last) = (source_at.min(topic_at), source_at.max(topic_at));
        // The template is [lead] X middle Y [tail], with X and Y the two placeholders.
        let lead = if first == 1 { literal(0) } else { "" };
        let tail = literal(last + 1);
        let middle = literal(first + 1);
        let inner = name.strip_prefix(lead)?.strip_suffix(tail)?;
        // An alias never contains the middle text, so split next to the source.
        let (x, y) = if source_at < topic_at {
            inner.split_once(middle)?
        } else {
            inner.rsplit_once(middle)?
        };
        if x.is_empty() || y.is_empty() {
            return None;
        }
        Some(if source_at < topic_at { (x, y) } else { (y, x) })
    }

    /// Whether the topic's name says it went through `cluster` on its way
    /// here: copying it there would send records round a loop.
    pub fn came_through(&self, name: &str, cluster: &str) -> bool {
        let mut current = name;
        while let Some((source, upstream)) = self.upstream(current) {
            if source == cluster {
                return true;
            }
            current = upstream;
        }
        false
    }
}

impl fmt::Display for ReplicationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_keeps_names_and_reads_nothing_back() {
        let policy = ReplicationPolicy::identity();
        assert_eq!(policy.target_topic("eu", "orders"), "orders");
        assert!(!policy.names_source());
        assert_eq!(policy.upstream("eu.orders"), None);
        assert!(!policy.came_through("eu.orders", "eu"));
        assert_eq!(policy.source_topic("eu", "eu.orders"), Some("eu.orders"));
    }

    #[test]
    fn source_topic_undoes_target_topic() {
        for (policy, copy) in [
            (
                ReplicationPolicy::prefix(".").expect("valid"),
                "eu.orders.v1",
            ),
            (
                ReplicationPolicy::template("{topic}-{source}").expect("valid"),
                "orders.v1-eu",
            ),
            (
                ReplicationPolicy::template("copy-{topic}").expect("valid"),
                "copy-orders.v1",
            ),
        ] {
            assert_eq!(policy.target_topic("eu", "orders.v1"), copy);
            assert_eq!(
                policy.source_topic("eu", copy),
                Some("orders.v1"),
                "{policy}"
            );
            // Not a copy from eu: the target's own topic, or another cluster's copy.
            assert_eq!(policy.source_topic("eu", "orders"), None, "{policy}");
        }
        let prefix = ReplicationPolicy::prefix(".").expect("valid");
        assert_eq!(prefix.source_topic("eu", "us.orders"), None);
        assert_eq!(prefix.source_topic("eu", "eu."), None);
    }

    #[test]
    fn prefix_names_and_reads_back_like_mirrormaker_2() {
        let policy = ReplicationPolicy::prefix(".").expect("valid");
        assert_eq!(policy.target_topic("eu", "orders.v1"), "eu.orders.v1");
        assert_eq!(policy.upstream("eu.orders.v1"), Some(("eu", "orders.v1")));
        assert_eq!(policy.upstream("orders"), None);
        // A ring eu -> us -> apac -> eu: apac holds us.eu.orders, which must
        // not go back to eu, nor to us, but may go to a fourth cluster.
        assert!(policy.came_through("us.eu.orders", "eu"));
        assert!(policy.came_through("us.eu.orders", "us"));
        assert!(!policy.came_through("us.eu.orders", "apac"));
        assert!(!policy.came_through("orders", "eu"));
        let dash = ReplicationPolicy::prefix("--").expect("valid");
        assert_eq!(dash.target_topic("a", "x"), "a--x");
        assert!(dash.came_through("b--a--x", "a"));
        assert!(ReplicationPolicy::prefix("").is_err());
    }

    #[test]
    fn templates_put_the_source_anywhere() {
        let suffix = ReplicationPolicy::template("{topic}-{source}").expect("valid");
        assert_eq!(suffix.target_topic("eu", "orders-v1"), "orders-v1-eu");
        assert_eq!(suffix.upstream("orders-v1-eu"), Some(("eu", "orders-v1")));
        assert!(suffix.came_through("orders-eu-us", "eu"));
        assert!(!suffix.came_through("orders-eu-us", "apac"));
        assert_eq!(suffix.separators(), ["-"]);
        let wrapped = ReplicationPolicy::template("mirror.{source}.{topic}.copy").expect("valid");
        assert_eq!(wrapped.target_topic("eu", "x"), "mirror.eu.x.copy");
        assert_eq!(wrapped.upstream("mirror.eu.x.copy"), Some(("eu", "x")));
        assert_eq!(wrapped.upstream("other.eu.x.copy"), None);
        let fixed = ReplicationPolicy::template("copy-{topic}").expect("valid");
        assert!(!fixed.names_source());
        assert_eq!(fixed.target_topic("eu", "x"), "copy-x");
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, why) in [
            ("{source}", "{topic} exactly once"),
            ("{topic}.{topic}", "{topic} exactly once"),
            ("{source}.{source}.{topic}", "{source} at most once"),
            ("{source}{topic}", "fixed text between them"),
            ("{topic}.{cluster}", "only {topic} and {source}"),
            ("{topic}}", "only {topic} and {source}"),
        ] {
            let err = ReplicationPolicy::template(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
