//! The `/metrics` text in parts, so that a scrape never holds more than one part's text: one
//! part per controller metric family, and the per-Release families split by label set into
//! [`SHARDS`] parts each. At 10,000 Releases one histogram family alone is some 25 MB of text;
//! a shard of it is under 2 MB.

use std::hash::{BuildHasher, Hash, RandomState};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

/// How many parts a per-Release family is encoded in.
pub const SHARDS: usize = 16;

/// The prefix of every Waymark metric.
const PREFIX: &str = "waymark";

/// A metric family kept as [`SHARDS`] families, a label set always in the same one (by its
/// hash), so that each can be encoded on its own. Reads and writes go to one shard, so they
/// also wait on one shard's lock only.
pub struct Sharded<S, M, C = fn() -> M> {
    shards: Vec<Family<S, M, C>>,
    hasher: RandomState,
}

impl<S, M, C> std::fmt::Debug for Sharded<S, M, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharded")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl<S: Clone + Hash + Eq, M: Default> Default for Sharded<S, M> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Family::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<S, M, C> Sharded<S, M, C>
where
    S: Clone + Hash + Eq,
    M: Clone,
    C: MetricConstructor<M> + Clone,
{
    /// Shards whose new series `constructor` makes (a histogram's buckets, say).
    pub fn new_with_constructor(constructor: C) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Family::new_with_constructor(constructor.clone()))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, labels: &S) -> &Family<S, M, C> {
        // The remainder is below SHARDS, so the cast back cannot truncate.
        let index = (self.hasher.hash_one(labels) % SHARDS as u64) as usize;
        &self.shards[index]
    }

    /// The series of `labels`, created if it does not exist.
    pub fn get_or_create(&self, labels: &S) -> impl Deref<Target = M> + '_ {
        self.shard(labels).get_or_create(labels)
    }

    /// The series of `labels`, if it exists.
    pub fn get(&self, labels: &S) -> Option<impl Deref<Target = M> + '_> {
        self.shard(labels).get(labels)
    }

    /// Remove the series of `labels`; whether it existed.
    pub fn remove(&self, labels: &S) -> bool {
        self.shard(labels).remove(labels)
    }
}

/// One part of the exposition.
#[derive(Debug)]
struct Part {
    registry: Registry,
    /// A shard's part: its family's description comes from the part before its shards, so
    /// it is cut from the shard's text.
    shard: bool,
    /// The part's length at the previous scrape: its string is sized from it, one allocation
    /// instead of a string that doubles its way up.
    size: AtomicUsize,
}

impl Part {
    fn new(registry: Registry, shard: bool) -> Self {
        Self {
            registry,
            shard,
            size: AtomicUsize::new(0),
        }
    }
}

/// The registry in parts: the process collector's first, then one part per Waymark metric
/// family (a description part and [`SHARDS`] parts for a sharded one), then the EOF marker.
/// The text of all parts in order is that of one registry holding every family.
#[derive(Debug)]
pub struct Exposition {
    parts: Vec<Part>,
}

impl Exposition {
    /// An exposition whose first part is `root` (the process metrics, without prefix).
    pub fn new(root: Registry) -> Self {
        Self {
            parts: vec![Part::new(root, false)],
        }
    }

    /// Register a Waymark metric (name prefixed `waymark_`) as a part of its own.
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(name, help, metric);
        self.parts.push(Part::new(registry, false));
    }

    /// Register a sharded Waymark family: its description (always, even without series), then
    /// each shard's series as a part of its own.
    pub fn register_sharded<S, M, C>(&mut self, name: &str, help: &str, family: &Sharded<S, M, C>)
    where
        S: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
        M: EncodeMetric + TypedMetric + std::fmt::Debug + Send + Sync + 'static,
        C: MetricConstructor<M> + Clone + Send + Sync + 'static,
    {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(Description {
            name: name.to_string(),
            // As the registry describes a family it holds.
            help: format!("{help}."),
            metric_type: M::TYPE,
        }));
        self.parts.push(Part::new(registry, false));
        for shard in &family.shards {
            let mut registry = Registry::with_prefix(PREFIX);
            registry.register(name, help, ShardFamily(shard.clone()));
            self.parts.push(Part::new(registry, true));
        }
    }

    /// Part `index` of the text, `None` past the EOF marker (the last part). A part with no
    /// series is empty.
    pub fn encode_part(&self, index: usize) -> Option<Result<String, std::fmt::Error>> {
        let Some(part) = self.parts.get(index) else {
            return (index == self.parts.len()).then(|| Ok("# EOF\n".to_string()));
        };
        let previous = part.size.load(Ordering::Relaxed);
        let mut text = String::with_capacity(previous + previous / 8);
        if let Err(error) =
            prometheus_client::encoding::text::encode_registry(&mut text, &part.registry)
        {
            return Some(Err(error));
        }
        if part.shard {
            text.drain(..description_len(&text));
        }
        part.size.store(text.len(), Ordering::Relaxed);
        Some(Ok(text))
    }
}

/// The length of the comment lines (`# HELP`, `# TYPE`, `# UNIT`) that open `text`.
fn description_len(text: &str) -> usize {
    text.split_inclusive('\n')
        .take_while(|line| line.starts_with("# "))
        .map(str::len)
        .sum()
}

/// A family's `# HELP` and `# TYPE` lines alone.
#[derive(Debug)]
struct Description {
    name: String,
    help: String,
    metric_type: MetricType,
}

impl Collector for Description {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_descriptor(&self.name, &self.help, None, self.metric_type)
            .map(drop)
    }
}

/// One shard, encoded like the family it is part of.
struct ShardFamily<S, M, C>(Family<S, M, C>);

impl<S: std::fmt::Debug, M: std::fmt::Debug, C> std::fmt::Debug for ShardFamily<S, M, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S, M: TypedMetric, C> TypedMetric for ShardFamily<S, M, C> {
    const TYPE: MetricType = M::TYPE;
}

impl<S, M, C> EncodeMetric for ShardFamily<S, M, C>
where
    S: Clone + Hash + Eq + EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
    C: MetricConstructor<M>,
{
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        EncodeMetric::is_empty(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::Histogram;

    use super::*;

    type Labels = Vec<(String, String)>;

    fn whole(exposition: &Exposition) -> Vec<String> {
        (0..)
            .map_while(|index| exposition.encode_part(index))
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_sharded_family_reads_as_one_family_and_no_part_holds_all_of_it() {
        let mut exposition = Exposition::new(Registry::default());
        let finished = Sharded::<Labels, Counter>::default();
        let durations: Sharded<Labels, Histogram, fn() -> Histogram> =
            Sharded::new_with_constructor(|| Histogram::new([60.0, 240.0]));
        exposition.register_sharded(
            "releases_finished",
            "Revisions whose release ended",
            &finished,
        );
        exposition.register_sharded(
            "release_duration_seconds",
            "Canary start to promotion",
            &durations,
        );
        for index in 0..320 {
            let labels = vec![("release".to_string(), format!("r{index}"))];
            finished.get_or_create(&labels).inc();
            durations.get_or_create(&labels).observe(100.0);
        }
        let parts = whole(&exposition);
        let text = parts.concat();
        for (family, kind) in [
            ("waymark_releases_finished", "counter"),
            ("waymark_release_duration_seconds", "histogram"),
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{text}"
            );
        }
        assert_eq!(text.matches("# HELP ").count(), 2, "{text}");
        assert!(text.contains("# HELP waymark_releases_finished Revisions whose release ended.\n"));
        // Each family's series follow its description, before the next family's.
        let (counters, histograms) =
            text.split_at(text.find("# HELP waymark_release_duration").unwrap());
        assert_eq!(
            counters
                .matches("\nwaymark_releases_finished_total{")
                .count(),
            320
        );
        assert_eq!(
            histograms
                .matches("\nwaymark_release_duration_seconds_count{")
                .count(),
            320
        );
        assert!(!histograms.contains("waymark_releases_finished_total{"));
        assert!(
            text.contains(r#"waymark_release_duration_seconds_bucket{le="240.0",release="r7"} 1"#)
        );
        // No part holds a whole family: a shard holds about a sixteenth of it.
        let largest = parts
            .iter()
            .map(|part| part.matches("_count{").count())
            .max()
            .unwrap();
        assert!(
            largest < 320 / 4,
            "the largest part holds {largest} of 320 series"
        );
        assert_eq!(parts.last().map(String::as_str), Some("# EOF\n"));
    }

    #[test]
    fn a_series_is_found_and_removed_in_its_shard_and_an_empty_family_is_still_described() {
        let mut exposition = Exposition::new(Registry::default());
        let family = Sharded::<Labels, Counter>::default();
        exposition.register_sharded(
            "releases_finished",
            "Revisions whose release ended",
            &family,
        );
        let labels = vec![("release".to_string(), "checkout".to_string())];
        family.get_or_create(&labels).inc_by(3);
        assert_eq!(family.get(&labels).map(|counter| counter.get()), Some(3));
        assert!(family.remove(&labels));
        assert!(family.get(&labels).is_none());
        assert!(!family.remove(&labels), "already gone");
        let text = whole(&exposition).concat();
        assert_eq!(
            text,
            "# HELP waymark_releases_finished Revisions whose release ended.\n\
             # TYPE waymark_releases_finished counter\n# EOF\n"
        );
    }
}
