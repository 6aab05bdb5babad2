//! `meshnode mesh ...` (membership) and `meshnode governance ...` (policies and motions).

use std::path::PathBuf;
use std::time::Duration;

use mesh_node::views::{
    InviteRequest, MeshView, MotionJson, ProposeRequest, RemoveRequest, TicketView,
};
use mesh_node::{DataDir, NodeConfig};
use mesh_protocol::governance::Ticket;

use crate::DirArg;
use crate::client::{self, Client};
use crate::exit::{Failure, fail};
use crate::output::{self, clean};

/// How long a join waits for the inviting member.
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `meshnode mesh`.
#[derive(Debug, clap::Args)]
pub(crate) struct MeshArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(subcommand)]
    action: MeshAction,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum MeshAction {
    /// Found a mesh from a written charter (charter.toml), replacing the mesh this node
    /// founded alone at `init`. The daemon must be stopped.
    Create {
        /// The charter file.
        #[arg(long)]
        charter: PathBuf,
    },
    /// Invite a domain: prints a ticket, alone, for `meshnode init --join` or
    /// `meshnode mesh join` on the newcomer. Single use; expires.
    Invite {
        /// Domain name of the newcomer.
        #[arg(long)]
        domain: String,
        /// Validity, e.g. 30m, 12h, 7d (default 1d).
        #[arg(long, value_parser = crate::share::parse_validity, default_value = "1d")]
        ttl: u64,
        /// Invite under a domain name a member already carries: the domain moving to a new
        /// key (remove its old key with `meshnode mesh remove`). Without it, a taken name is
        /// refused: two keys under one name show in the catalog as `domain@fingerprint`.
        #[arg(long)]
        reuse_name: bool,
    },
    /// Join a mesh with a ticket, leaving the mesh this node founded alone at `init`. The
    /// daemon must be stopped.
    Join {
        /// The ticket printed by `meshnode mesh invite` on a member.
        ticket: String,
    },
    /// The members of the mesh.
    Members,
    /// Propose (and sign) the removal of a member; the charter's quorum of governing domains
    /// must sign. Every node then refuses its key and its agreements end.
    Remove {
        /// Domain name or key fingerprint of the member.
        member: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `meshnode governance`.
#[derive(Debug, clap::Args)]
pub(crate) struct GovernanceArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(subcommand)]
    action: GovernanceAction,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum GovernanceAction {
    /// The charter and the policies in force, rule by rule.
    Show,
    /// Propose an amendment of the policies (signed by this domain); governing domains sign
    /// it with `governance sign` until the charter's quorum carries it.
    Propose {
        /// Columns classified with this tag must be restricted (repeatable), e.g. pii.
        #[arg(long = "restrict-tag", value_name = "TAG")]
        restrict_tags: Vec<String>,
        /// Drop a restricted tag (repeatable).
        #[arg(long = "drop-restrict-tag", value_name = "TAG")]
        drop_restrict_tags: Vec<String>,
        /// Require a descriptor field: contact, description, freshness-sla, tags (repeatable).
        #[arg(long, value_name = "FIELD")]
        require: Vec<String>,
        /// Drop a required field (repeatable).
        #[arg(long = "drop-require", value_name = "FIELD")]
        drop_require: Vec<String>,
        /// Longest contract in days, mesh-wide (0 lifts the cap).
        #[arg(long)]
        max_contract_days: Option<u32>,
        /// The purposes contracts may state, comma-separated (replaces the vocabulary; an
        /// empty value lifts it).
        #[arg(long, value_delimiter = ',')]
        purposes: Option<Vec<String>>,
        /// What changes and why.
        #[arg(long, default_value = "")]
        summary: String,
    },
    /// Sign a motion (an amendment, removal or admission) proposed by another domain.
    Sign {
        /// Motion id: at least 8 of its hex digits.
        motion: String,
    },
    /// Open and carried motions, and who has signed them.
    Status,
}

pub(crate) async fn mesh(args: MeshArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.dir.data_dir)?;
    match args.action {
        MeshAction::Create { charter } => create(&dir, &charter, args.json),
        MeshAction::Join { ticket } => join_offline(&dir, &ticket, args.json).await,
        MeshAction::Invite {
            domain,
            ttl,
            reuse_name,
        } => {
            let client = Client::for_data_dir(&dir)?;
            let view: TicketView = client
                .post(
                    "/v1/mesh/invite",
                    &InviteRequest {
                        domain,
                        ttl_secs: Some(ttl),
                        reuse_name,
                    },
                )
                .await?;
            if args.json {
                return output::json(&view);
            }
            crate::outln!("{}", view.ticket);
            Ok(())
        }
        MeshAction::Members => {
            let client = Client::for_data_dir(&dir)?;
            let view: MeshView = client.get("/v1/mesh").await?;
            if args.json {
                return output::json(&view.members);
            }
            for m in &view.members {
                crate::outln!(
                    "{:<20} {}{}",
                    clean(&m.domain),
                    m.fingerprint,
                    if m.governor { "  governor" } else { "" }
                );
            }
            Ok(())
        }
        MeshAction::Remove { member, reason } => {
            let client = Client::for_data_dir(&dir)?;
            let motion: MotionJson = client
                .post("/v1/mesh/remove", &RemoveRequest { member, reason })
                .await?;
            print_motion(&motion, args.json)
        }
    }
}

pub(crate) async fn governance(args: GovernanceArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.dir.data_dir)?;
    let client = Client::for_data_dir(&dir)?;
    match args.action {
        GovernanceAction::Show => {
            let view: MeshView = client.get("/v1/mesh").await?;
            if args.json {
                return output::json(&view);
            }
            crate::outln!(
                "mesh         {} ({})\ndecision     {} of {} governing domains\nadmission    {}\nmembers      {}\npolicies     version {}",
                clean(&view.name),
                &view.mesh_id[..16],
                view.quorum,
                view.governors,
                view.admission,
                view.members.len(),
                view.policy_version
            );
            if view.rules.is_empty() {
                crate::outln!("  (no mesh-wide rules)");
            }
            for rule in &view.rules {
                crate::outln!("  {:<28} {}", clean(&rule.id), clean(&rule.explanation));
            }
            Ok(())
        }
        GovernanceAction::Propose {
            restrict_tags,
            drop_restrict_tags,
            require,
            drop_require,
            max_contract_days,
            purposes,
            summary,
        } => {
            let purposes = purposes.map(|p| p.into_iter().filter(|s| !s.is_empty()).collect());
            let request = ProposeRequest {
                restrict_tags,
                drop_restrict_tags,
                require,
                drop_require,
                max_contract_days,
                purposes,
                summary,
            };
            let motion: MotionJson = client.post("/v1/governance/propose", &request).await?;
            print_motion(&motion, args.json)
        }
        GovernanceAction::Sign { motion } => {
            let motion: MotionJson = client
                .post(&format!("/v1/governance/sign/{motion}"), &())
                .await?;
            print_motion(&motion, args.json)
        }
        GovernanceAction::Status => {
            let motions: Vec<MotionJson> = client.get("/v1/governance/motions").await?;
            if args.json {
                return output::json(&motions);
            }
            if motions.is_empty() {
                crate::outln!("no motions");
            }
            for m in &motions {
                print_motion_line(m);
            }
            Ok(())
        }
    }
}

fn print_motion(motion: &MotionJson, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(motion);
    }
    print_motion_line(motion);
    if !motion.carried {
        crate::outln!(
            "  waiting for {} more signature(s) of {}: `meshnode governance sign {}`",
            motion.needed.saturating_sub(motion.signed_by.len()),
            motion.eligible,
            &motion.id[..16]
        );
    }
    Ok(())
}

fn print_motion_line(m: &MotionJson) {
    crate::outln!(
        "{}  {:<7} {:<8} {}/{} signed ({})  {}",
        &m.id[..16],
        m.kind,
        if m.carried { "carried" } else { "open" },
        m.signed_by.len(),
        m.needed,
        m.signed_by
            .iter()
            .map(|s| clean(s))
            .collect::<Vec<_>>()
            .join(", "),
        clean(&m.summary)
    );
}

/// Opens the store of a stopped daemon.
fn open_store(dir: &DataDir) -> anyhow::Result<mesh_node::store::Store> {
    mesh_node::store::Store::open(&dir.db()).map_err(|e| {
        fail(
            Failure::Other,
            format!(
                "cannot open the database in {}: {e} (stop the daemon first: this command changes the node's mesh)",
                dir.db().display()
            ),
        )
    })
}

/// `mesh create --charter FILE`.
fn create(dir: &DataDir, path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let config = NodeConfig::load(&dir.config())?;
    let identity = mesh_node::keyfile::load(&dir.identity())?;
    let charter = mesh_node::governance::read_charter(path, &identity, &config.domain, now_ms())
        .map_err(|e| fail(Failure::Usage, e.to_string()))?;
    let store = open_store(dir)?;
    let state = mesh_node::governance::refound(&store, &identity, &charter, &[])?;
    store.flush_blocking()?;
    report_mesh(&state, true, json)
}

/// `mesh join TICKET` on an initialised node whose daemon is stopped.
async fn join_offline(dir: &DataDir, ticket: &str, json: bool) -> anyhow::Result<()> {
    let ticket = parse_ticket(ticket)?;
    let config = NodeConfig::load(&dir.config())?;
    let identity = mesh_node::keyfile::load(&dir.identity())?;
    if ticket.domain != config.domain {
        return Err(fail(
            Failure::Usage,
            format!(
                "the ticket is for domain `{}`, this node serves `{}`: ask for a ticket for `{}`",
                clean(&ticket.domain),
                clean(&config.domain),
                clean(&config.domain)
            ),
        ));
    }
    let store = open_store(dir)?;
    let welcome = join_network(&ticket, &identity, &config.domain).await?;
    let state =
        mesh_node::governance::refound(&store, &identity, &welcome.charter, &welcome.votes)?;
    store.flush_blocking()?;
    // Dial the inviting member at start.
    let mut config = config;
    for addr in &ticket.bootstrap {
        if !config.bootstrap.contains(addr) {
            config.bootstrap.push(addr.clone());
        }
    }
    // The node is in the new mesh from here: if its config cannot be written, say what the
    // operator has to add by hand.
    if let Err(e) = crate::commands::write_config(dir, &config) {
        return Err(e.context(format!(
            "joined the mesh, but could not record its members' addresses: add `bootstrap = {:?}` \
             to `{}` before the next start",
            ticket.bootstrap,
            dir.config().display()
        )));
    }
    report_mesh(&state, welcome.admitted, json)
}

/// Reads a ticket, with a usage error that says what to do.
pub(crate) fn parse_ticket(text: &str) -> anyhow::Result<Ticket> {
    Ticket::decode(text).map_err(|e| fail(Failure::Usage, e.to_string()))
}

/// Runs the join exchange with the ticket's member.
pub(crate) async fn join_network(
    ticket: &Ticket,
    identity: &mesh_protocol::Identity,
    domain: &str,
) -> anyhow::Result<mesh_node::governance::join::Welcome> {
    use mesh_node::governance::join::JoinError;
    mesh_node::governance::join::join(ticket, identity, domain, now_ms(), JOIN_TIMEOUT)
        .await
        .map_err(|e| {
            let kind = match &e {
                JoinError::Expired | JoinError::NoAddress => Failure::Usage,
                JoinError::Unreachable { .. } | JoinError::Transport(_) => Failure::Unreachable,
                JoinError::Refused(_) => Failure::Refused,
                JoinError::Mismatch(_) => Failure::Verification,
            };
            fail(kind, e.to_string())
        })
}

/// What `mesh create` and `mesh join` leave the node in: the mesh, and whether this domain is
/// a member of it yet (`admitted`: `false` while a join waits for the charter's quorum).
fn report_mesh(
    state: &mesh_protocol::governance::MeshState,
    admitted: bool,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return output::json(&serde_json::json!({
            "mesh_id": state.id().to_hex(),
            "name": state.charter().name,
            "members": state.member_count(),
            "policy_version": state.policies().version,
            "admitted": admitted,
        }));
    }
    crate::outln!("{}", mesh_line(state, admitted));
    Ok(())
}

/// The line [`report_mesh`] prints.
fn mesh_line(state: &mesh_protocol::governance::MeshState, admitted: bool) -> String {
    if admitted {
        format!(
            "this node is in mesh `{}` ({}): {} member(s), policies version {}",
            clean(&state.charter().name),
            state.id().short(),
            state.member_count(),
            state.policies().version
        )
    } else {
        format!(
            "asked to join mesh `{}` ({}): the admission waits for the charter's quorum of \
             governing domains (`meshnode governance status` on a member shows it, \
             `meshnode governance sign` there adds a signature); start this node with \
             `meshnode run`: the members let it in once the admission is carried",
            clean(&state.charter().name),
            state.id().short()
        )
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
