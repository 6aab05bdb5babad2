//! Topology files (`configs/topologies/*.toml`): clouds and their domains, link properties
//! inside and between clouds, and a timeline of events. `configs/topologies/example.toml`
//! documents every key.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use mesh_protocol::descriptor::Approval;
use serde::Deserialize;

use crate::emulator::LinkParams;

/// A whole scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Scenario name, for reports.
    pub name: String,
    /// Default seed; `--seed` overrides it.
    #[serde(default)]
    pub seed: u64,
    /// Runner settings.
    #[serde(default)]
    pub settings: Settings,
    /// Link inside a cloud unless the cloud overrides it.
    #[serde(default)]
    pub intra: Link,
    /// Link between two clouds unless a `[[links]]` entry overrides it.
    #[serde(default = "default_inter")]
    pub inter: Link,
    /// The clouds (at least one).
    pub clouds: Vec<Cloud>,
    /// Links between specific pairs of clouds (both directions).
    #[serde(default)]
    pub links: Vec<CloudLink>,
    /// The timeline.
    #[serde(default)]
    pub events: Vec<Event>,
    /// The mesh's charter (default: the first initial domain governs alone, every initial
    /// domain is a founding member).
    #[serde(default)]
    pub charter: CharterSpec,
}

/// The charter the scenario's mesh is founded with (`[charter]`). Domains that are neither
/// governors nor founding members join by admission at their `join` event.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharterSpec {
    /// Governing domains: they carry amendments and removals (default: the first initial
    /// domain).
    #[serde(default)]
    pub governors: Vec<String>,
    /// How many governors' signatures carry a motion (default 1).
    #[serde(default)]
    pub quorum: Option<u16>,
    /// Founding members besides the governors: `"all"` (every initial domain, the default)
    /// or a list of initial domains.
    #[serde(default)]
    pub members: Option<Members>,
}

/// `members = "all"` or `members = ["a", "b"]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Members {
    /// `"all"`.
    Keyword(String),
    /// The listed domains.
    List(Vec<String>),
}

/// How the runner drives the nodes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Each node bootstraps to this many random earlier nodes (any cloud).
    pub bootstrap_degree: usize,
    /// Anti-entropy interval of every node, seconds (at least 1).
    pub sync_interval_secs: u64,
    /// gossipsub heartbeat of every node, ms.
    pub heartbeat_ms: u64,
    /// Longest delay between bootstrap redials, ms.
    pub redial_max_ms: u64,
    /// How long a connection no protocol needs stays open, ms (production default: 120000).
    pub idle_timeout_ms: u64,
    /// Time between "every node has a peer" and the timeline's t = 0, ms.
    pub warmup_ms: u64,
    /// Longest wait for convergence after the last event, ms.
    pub settle_ms: u64,
    /// Longest wait for every node to have a peer before the timeline starts, ms.
    pub formation_timeout_ms: u64,
    /// How many of the initial nodes serve the Kademlia DHT, spread evenly over them; the
    /// others (and nodes that join later, unless their index falls on the spread) run
    /// Kademlia as clients and find peers from node records. Default: every node.
    pub dht_servers: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bootstrap_degree: 2,
            sync_interval_secs: 1,
            heartbeat_ms: 500,
            redial_max_ms: 2_000,
            idle_timeout_ms: 120_000,
            warmup_ms: 3_000,
            settle_ms: 30_000,
            formation_timeout_ms: 120_000,
            dht_servers: None,
        }
    }
}

/// Latency, jitter and loss of a link (each direction).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// One-way latency, ms.
    #[serde(default)]
    pub latency_ms: f64,
    /// Uniform jitter, ± ms.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Loss probability, 0.0–1.0.
    #[serde(default)]
    pub loss: f64,
}

fn default_inter() -> Link {
    Link {
        latency_ms: 50.0,
        jitter_ms: 0.0,
        loss: 0.0,
    }
}

impl Link {
    /// As emulator parameters.
    pub fn params(&self) -> LinkParams {
        LinkParams {
            latency: Duration::from_secs_f64(self.latency_ms.max(0.0) / 1000.0),
            jitter: Duration::from_secs_f64(self.jitter_ms.max(0.0) / 1000.0),
            loss: self.loss.clamp(0.0, 1.0),
        }
    }
}

/// One cloud (or on-prem site) and its domains.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    /// Name, e.g. `aws-eu`.
    pub name: String,
    /// Named domains, one node each.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Additional generated domains `<cloud>-<i>`.
    #[serde(default)]
    pub count: usize,
    /// Link inside this cloud, overriding the top-level `intra`.
    #[serde(default)]
    pub intra: Option<Link>,
}

impl Cloud {
    /// Every domain of the cloud: the named ones, then the generated ones.
    pub fn all_domains(&self) -> Vec<String> {
        let mut out = self.domains.clone();
        out.extend((0..self.count).map(|i| format!("{}-{i}", self.name)));
        out
    }
}

/// The link between two clouds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudLink {
    /// One cloud.
    pub a: String,
    /// The other.
    pub b: String,
    /// Its properties.
    #[serde(flatten)]
    pub link: Link,
}

/// One timeline entry.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    /// When, in ms after the timeline starts.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub action: Action,
}

/// What happens at an event.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A domain publishes a new version of a product from a generated Arrow file of `rows`
    /// rows (see [`crate::dataset`]).
    Publish {
        /// Publishing domain.
        domain: String,
        /// Product name.
        product: String,
        /// Rows of the generated data.
        #[serde(default = "default_rows")]
        rows: usize,
        /// How the provider answers contract requests (default: the previous version's
        /// policy, `auto` for a new product).
        #[serde(default)]
        approval: Option<Approval>,
        /// Allowed purposes (empty: the previous version's, or any).
        #[serde(default)]
        purposes: Vec<String>,
        /// Restricted columns, never granted (empty: the previous version's, or none).
        #[serde(default)]
        restricted: Vec<String>,
    },
    /// `count` publishes from random live domains, `every_ms` apart, products `bench-<i>`.
    PublishRandom {
        /// How many.
        count: usize,
        /// Spacing, ms.
        every_ms: u64,
        /// Rows of each generated data set.
        #[serde(default = "default_rows")]
        rows: usize,
    },
    /// A consumer asks the provider of `product` for a contract over `/meshnode/contract/1`
    /// (what `meshnode share request` does). When the provider's policy is `manual`, its
    /// operator gives `decision` `decide_after_ms` after the request is pending.
    ContractRequest {
        /// Consumer domain.
        consumer: String,
        /// `domain/product`.
        product: String,
        /// Stated purpose.
        #[serde(default = "default_purpose")]
        purpose: String,
        /// Columns asked for (default: all).
        #[serde(default)]
        columns: Option<Vec<String>>,
        /// Row filter, e.g. `region = 'EU' AND amount_eur > 100`.
        #[serde(default)]
        filter: Option<String>,
        /// Validity in days (default: the node's).
        #[serde(default)]
        days: Option<u32>,
        /// The provider operator's answer to a pending request.
        #[serde(default)]
        decision: Decision,
        /// Delay of that answer after the request became pending, ms.
        #[serde(default)]
        decide_after_ms: u64,
    },
    /// A consumer fetches the latest version of `product` over the data plane under its
    /// agreement (what `meshnode fetch` does). Waits for an earlier `contract_request` of the
    /// same consumer and product to conclude first.
    Fetch {
        /// Consumer domain.
        consumer: String,
        /// `domain/product`.
        product: String,
    },
    /// Blackholes all traffic between clouds `a` and `b`.
    Partition {
        /// One cloud.
        a: String,
        /// The other.
        b: String,
    },
    /// Ends the partition of `a` and `b`, or every partition when both are omitted.
    Heal {
        /// One cloud.
        #[serde(default)]
        a: Option<String>,
        /// The other.
        #[serde(default)]
        b: Option<String>,
    },
    /// Stops a node abruptly (its task is aborted, as with `kill -9`).
    Kill {
        /// Domain.
        domain: String,
    },
    /// Starts a killed node again from its data directory and identity.
    Restart {
        /// Domain.
        domain: String,
    },
    /// A new domain joins `cloud`, bootstrapping to random live nodes; a live member admits
    /// it first (its admission is timed like the other membership changes).
    Join {
        /// New domain name.
        domain: String,
        /// Its cloud.
        cloud: String,
    },
    /// Governor `by` proposes an amendment of the mesh's policies (the policies in force plus
    /// the changes below, version + 1); each of `signers` signs it once it holds the motion.
    /// It is carried when the charter's quorum of governors has signed.
    Amend {
        /// Proposing governor.
        by: String,
        /// Governors who sign after the proposer.
        #[serde(default)]
        signers: Vec<String>,
        /// Classification tags whose columns must be restricted.
        #[serde(default)]
        restrict_tags: Vec<String>,
        /// Descriptor fields every product must fill (`contact`, `description`,
        /// `freshness-sla`, `tags`).
        #[serde(default)]
        require: Vec<String>,
        /// Longest contract, days.
        #[serde(default)]
        max_contract_days: Option<u32>,
        /// The purpose vocabulary.
        #[serde(default)]
        purposes: Option<Vec<String>>,
        /// What changes and why.
        #[serde(default)]
        summary: String,
    },
    /// Governors `by` remove member `domain` (the first proposes, the others sign once they
    /// hold the motion). Its node keeps running, refused by every member.
    Remove {
        /// The member removed.
        domain: String,
        /// Governors who sign, proposer first.
        by: Vec<String>,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// An attacker attached to `via` gossips a descriptor claiming `victim`'s `product`,
    /// signed with the attacker's own key.
    InjectForgery {
        /// Domain whose key the forgery claims.
        victim: String,
        /// Product name.
        product: String,
        /// Domain the attacker is connected to.
        via: String,
    },
}

fn default_rows() -> usize {
    100
}

fn default_purpose() -> String {
    "analytics".to_owned()
}

/// A provider operator's answer to a pending contract request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// `meshnode share accept`.
    #[default]
    Accept,
    /// `meshnode share reject`.
    Reject,
}

/// Splits `domain/product` into its parts.
pub fn split_product(spec: &str) -> Option<(&str, &str)> {
    let (domain, product) = spec.split_once('/')?;
    (!domain.is_empty() && !product.is_empty()).then_some((domain, product))
}

/// Errors in a topology file.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Cannot read.
    #[error("cannot read the topology: {0}")]
    Read(String),
    /// Not valid TOML or unknown keys.
    #[error("the topology is not valid TOML: {0}")]
    Parse(String),
    /// Inconsistent.
    #[error("the topology is inconsistent: {0}")]
    Invalid(String),
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TopologyError::Read(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses and validates topology text.
    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        let topology: Topology =
            toml::from_str(text).map_err(|e| TopologyError::Parse(e.to_string()))?;
        topology.validate()?;
        Ok(topology)
    }

    /// Index of a cloud by name.
    pub fn cloud_index(&self, name: &str) -> Option<usize> {
        self.clouds.iter().position(|c| c.name == name)
    }

    /// Link matrix `[from][to]` for the emulator.
    pub fn link_matrix(&self) -> Vec<Vec<LinkParams>> {
        let n = self.clouds.len();
        let mut m = vec![vec![self.inter.params(); n]; n];
        for (i, c) in self.clouds.iter().enumerate() {
            m[i][i] = c.intra.unwrap_or(self.intra).params();
        }
        for l in &self.links {
            if let (Some(a), Some(b)) = (self.cloud_index(&l.a), self.cloud_index(&l.b)) {
                m[a][b] = l.link.params();
                m[b][a] = l.link.params();
            }
        }
        m
    }

    /// Every initial domain with its cloud index, in node order.
    pub fn initial_nodes(&self) -> Vec<(String, usize)> {
        self.clouds
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.all_domains().into_iter().map(move |d| (d, i)))
            .collect()
    }

    /// The governing domains of the charter.
    pub fn governors(&self) -> Vec<String> {
        if self.charter.governors.is_empty() {
            self.initial_nodes()
                .into_iter()
                .take(1)
                .map(|(d, _)| d)
                .collect()
        } else {
            self.charter.governors.clone()
        }
    }

    /// The charter's decision rule: governors' signatures that carry a motion.
    pub fn quorum(&self) -> u16 {
        self.charter.quorum.unwrap_or(1)
    }

    /// The founding members besides the governors.
    pub fn founding_members(&self) -> Vec<String> {
        let governors = self.governors();
        let all = || self.initial_nodes().into_iter().map(|(d, _)| d).collect();
        let members: Vec<String> = match &self.charter.members {
            None | Some(Members::Keyword(_)) => all(),
            Some(Members::List(list)) => list.clone(),
        };
        members
            .into_iter()
            .filter(|d| !governors.contains(d))
            .collect()
    }

    /// Every domain the scenario ever runs: the initial nodes, then those that join later.
    pub fn every_domain(&self) -> Vec<String> {
        let mut out: Vec<String> = self.initial_nodes().into_iter().map(|(d, _)| d).collect();
        for e in &self.events {
            if let Action::Join { domain, .. } = &e.action
                && !out.contains(domain)
            {
                out.push(domain.clone());
            }
        }
        out
    }

    /// Domains that take part in a contract or a fetch (consumers and providers): the nodes
    /// that run a data plane.
    pub fn data_plane_domains(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for e in &self.events {
            if let Action::ContractRequest {
                consumer, product, ..
            }
            | Action::Fetch { consumer, product } = &e.action
            {
                out.insert(consumer.clone());
                if let Some((provider, _)) = split_product(product) {
                    out.insert(provider.to_owned());
                }
            }
        }
        out
    }

    fn validate(&self) -> Result<(), TopologyError> {
        let bad = |m: String| Err(TopologyError::Invalid(m));
        if self.clouds.is_empty() {
            return bad("at least one `[[clouds]]` entry is needed".into());
        }
        let mut clouds = BTreeSet::new();
        for c in &self.clouds {
            if !clouds.insert(c.name.as_str()) {
                return bad(format!("cloud `{}` is listed twice", c.name));
            }
        }
        let mut domains = BTreeSet::new();
        for (d, _) in self.initial_nodes() {
            if mesh_protocol::descriptor::validate_name("domain", &d).is_err() {
                return bad(format!("domain `{d}` must be of [a-z0-9-]"));
            }
            if !domains.insert(d.clone()) {
                return bad(format!("domain `{d}` is listed twice"));
            }
        }
        if domains.is_empty() {
            return bad("the clouds have no domains".into());
        }
        let cloud = |name: &str| -> Result<(), TopologyError> {
            if clouds.contains(name) {
                Ok(())
            } else {
                Err(TopologyError::Invalid(format!(
                    "unknown cloud `{name}`; clouds are: {}",
                    clouds.iter().copied().collect::<Vec<_>>().join(", ")
                )))
            }
        };
        for l in &self.links {
            cloud(&l.a)?;
            cloud(&l.b)?;
        }
        self.validate_charter(&domains)?;
        if self.settings.sync_interval_secs == 0 {
            return bad("settings.sync_interval_secs must be at least 1".into());
        }
        // Domains that exist at some point: the initial ones and those that join.
        let mut known = domains.clone();
        for e in &self.events {
            if let Action::Join { domain, cloud: c } = &e.action {
                cloud(c)?;
                if !known.insert(domain.clone()) {
                    return bad(format!("joining domain `{domain}` already exists"));
                }
            }
        }
        let domain = |name: &str| -> Result<(), TopologyError> {
            if known.contains(name) {
                Ok(())
            } else {
                Err(TopologyError::Invalid(format!(
                    "event names unknown domain `{name}`"
                )))
            }
        };
        let product_spec = |spec: &str| -> Result<(), TopologyError> {
            let Some((d, p)) = split_product(spec) else {
                return Err(TopologyError::Invalid(format!(
                    "product `{spec}` must be written `domain/product`"
                )));
            };
            domain(d)?;
            mesh_protocol::descriptor::validate_name("product", p)
                .map_err(|_| TopologyError::Invalid(format!("product `{p}` must be of [a-z0-9-]")))
        };
        for e in &self.events {
            match &e.action {
                Action::Publish {
                    domain: d, product, ..
                } => {
                    domain(d)?;
                    if mesh_protocol::descriptor::validate_name("product", product).is_err() {
                        return bad(format!("product `{product}` must be of [a-z0-9-]"));
                    }
                }
                Action::Partition { a, b } => {
                    cloud(a)?;
                    cloud(b)?;
                    if a == b {
                        return bad(format!("cannot partition cloud `{a}` from itself"));
                    }
                }
                Action::Heal { a, b } => match (a, b) {
                    (Some(a), Some(b)) => {
                        cloud(a)?;
                        cloud(b)?;
                    }
                    (None, None) => {}
                    _ => return bad("`heal` takes both `a` and `b`, or neither".into()),
                },
                Action::Kill { domain: d } | Action::Restart { domain: d } => domain(d)?,
                Action::ContractRequest {
                    consumer,
                    product,
                    filter,
                    ..
                } => {
                    domain(consumer)?;
                    product_spec(product)?;
                    if let Some(f) = filter
                        && let Err(e) = mesh_protocol::Filter::parse(f)
                    {
                        return bad(format!("filter `{f}`: {e}"));
                    }
                }
                Action::Fetch { consumer, product } => {
                    domain(consumer)?;
                    product_spec(product)?;
                }
                Action::InjectForgery {
                    victim,
                    via,
                    product,
                } => {
                    domain(victim)?;
                    domain(via)?;
                    if mesh_protocol::descriptor::validate_name("product", product).is_err() {
                        return bad(format!("product `{product}` must be of [a-z0-9-]"));
                    }
                }
                Action::Amend { by, signers, .. } => {
                    for g in std::iter::once(by).chain(signers) {
                        self.governor(g)?;
                    }
                }
                Action::Remove { domain: d, by, .. } => {
                    domain(d)?;
                    if self.governors().contains(d) {
                        return bad(format!(
                            "`remove` names governor `{d}`: the charter's governors cannot be removed"
                        ));
                    }
                    if by.is_empty() {
                        return bad(format!(
                            "`remove` of `{d}` needs `by`, the governors who sign"
                        ));
                    }
                    for g in by {
                        self.governor(g)?;
                    }
                }
                Action::PublishRandom { .. } | Action::Join { .. } => {}
            }
        }
        Ok(())
    }

    fn governor(&self, name: &str) -> Result<(), TopologyError> {
        if self.governors().iter().any(|g| g == name) {
            Ok(())
        } else {
            Err(TopologyError::Invalid(format!(
                "`{name}` signs a motion but is not a governor; governors are: {}",
                self.governors().join(", ")
            )))
        }
    }

    fn validate_charter(&self, initial: &BTreeSet<String>) -> Result<(), TopologyError> {
        let bad = |m: String| Err(TopologyError::Invalid(m));
        let governors = self.governors();
        let mut seen = BTreeSet::new();
        for g in &governors {
            if !initial.contains(g) {
                return bad(format!(
                    "charter governor `{g}` is not an initial domain of any cloud"
                ));
            }
            if !seen.insert(g) {
                return bad(format!("charter governor `{g}` is listed twice"));
            }
        }
        let quorum = usize::from(self.quorum());
        if quorum == 0 || quorum > governors.len() {
            return bad(format!(
                "charter quorum must be between 1 and the {} governors, not {quorum}",
                governors.len()
            ));
        }
        match &self.charter.members {
            Some(Members::Keyword(k)) if k != "all" => {
                return bad(format!(
                    "charter members must be \"all\" or a list of domains, not \"{k}\""
                ));
            }
            Some(Members::List(list)) => {
                for m in list {
                    if !initial.contains(m) {
                        return bad(format!(
                            "charter member `{m}` is not an initial domain (a domain that comes later joins with a `join` event)"
                        ));
                    }
                }
            }
            _ => {}
        }
        let members = self.founding_members();
        for d in initial {
            if !governors.contains(d) && !members.contains(d) {
                return bad(format!(
                    "initial domain `{d}` is neither a governor nor a member of the charter: list it in `members`"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "t"
seed = 3
intra = { latency_ms = 1.0 }
inter = { latency_ms = 40.0, jitter_ms = 5.0, loss = 0.01 }

[[clouds]]
name = "aws-eu"
domains = ["product", "customer"]

[[clouds]]
name = "gcp-asia"
count = 2
intra = { latency_ms = 2.0 }

[[links]]
a = "aws-eu"
b = "gcp-asia"
latency_ms = 80.0

[[events]]
at_ms = 0
kind = "publish"
domain = "product"
product = "catalog"
rows = 10

[[events]]
at_ms = 10
kind = "partition"
a = "aws-eu"
b = "gcp-asia"

[[events]]
at_ms = 20
kind = "heal"

[[events]]
at_ms = 30
kind = "fetch"
consumer = "customer"
product = "product/catalog"

[[events]]
at_ms = 40
kind = "contract_request"
consumer = "gcp-asia-0"
product = "product/catalog"
filter = "region = 'EU'"
decision = "reject"
"#;

    #[test]
    fn parses_and_builds_links() {
        let t = Topology::parse(SMALL).unwrap();
        assert_eq!(t.initial_nodes().len(), 4);
        assert_eq!(t.initial_nodes()[3], ("gcp-asia-1".into(), 1));
        let m = t.link_matrix();
        assert_eq!(m[0][1].latency, Duration::from_millis(80));
        assert_eq!(m[1][1].latency, Duration::from_millis(2));
        assert_eq!(m[0][0].latency, Duration::from_millis(1));
        assert_eq!(t.events.len(), 5);
        assert!(matches!(t.events[3].action, Action::Fetch { .. }));
        assert!(matches!(
            &t.events[4].action,
            Action::ContractRequest {
                decision: Decision::Reject,
                purpose,
                ..
            } if purpose == "analytics"
        ));
        let involved: Vec<String> = t.data_plane_domains().into_iter().collect();
        assert_eq!(involved, ["customer", "gcp-asia-0", "product"]);
    }

    #[test]
    fn shipped_topologies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/topologies");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Topology::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 6, "{n} topologies in {}", dir.display());
    }

    #[test]
    fn names_what_is_wrong() {
        let bad = SMALL.replace(
            "b = \"gcp-asia\"\n\n[[events]]\nat_ms = 20",
            "b = \"mars\"\n\n[[events]]\nat_ms = 20",
        );
        let err = Topology::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("mars"), "{err}");
        let bad = SMALL.replace(
            "domain = \"product\"\nproduct",
            "domain = \"nobody\"\nproduct",
        );
        let err = Topology::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("nobody"), "{err}");
        let bad = SMALL.replace("region = 'EU'", "region ~ 'EU'");
        let err = Topology::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("filter"), "{err}");
        let bad = SMALL.replace("product = \"product/catalog\"", "product = \"catalog\"");
        let err = Topology::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("domain/product"), "{err}");
        let bad = SMALL.replace(
            "product = \"product/catalog\"",
            "product = \"nobody/catalog\"",
        );
        let err = Topology::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("nobody"), "{err}");
        let err = Topology::parse("name = 1").unwrap_err().to_string();
        assert!(err.contains("TOML"), "{err}");
    }
}
