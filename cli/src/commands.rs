//! One function per command.

use std::path::PathBuf;

use anyhow::{Context, bail};
use mesh_node::dataplane::{Compression, FetchOutcome, OutputFormat};
use mesh_node::progress::ProgressView;
use mesh_node::views::{FetchRequestBody, PeerView, ProductView, PublishRequest, StatusView};
use mesh_node::{DataDir, NodeConfig};

use crate::DirArg;
use crate::client::{self, Client};
use crate::exit::{Failure, fail};
use crate::output;
use crate::progress;

/// `meshnode init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Data directory to create (default: ~/.meshnode).
    #[arg(long, env = "MESHNODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Domain name this node serves, e.g. `sales` ([a-z0-9-]); with --join, the ticket's.
    #[arg(long, required_unless_present = "join")]
    domain: Option<String>,
    /// Control-plane listen multiaddr (repeatable).
    #[arg(long)]
    listen: Vec<String>,
    /// Control API port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    api_port: u16,
    /// Data-plane listen address (host:port).
    #[arg(long)]
    data_listen: Option<std::net::SocketAddr>,
    /// Multiaddr of a peer to join through (repeatable).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Found the mesh from a written charter (charter.toml) instead of founding one with
    /// this domain as its sole governor.
    #[arg(long, conflicts_with = "join")]
    charter: Option<PathBuf>,
    /// Join a mesh with a ticket from `meshnode mesh invite` on one of its members.
    #[arg(long, value_name = "TICKET")]
    join: Option<String>,
}

pub(crate) async fn init(args: InitArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.data_dir)?;
    // A bad ticket is refused before anything is written.
    let ticket = args
        .join
        .as_deref()
        .map(crate::mesh::parse_ticket)
        .transpose()?;
    let domain = match (&args.domain, &ticket) {
        (Some(d), Some(t)) if *d != t.domain => {
            return Err(fail(
                Failure::Usage,
                format!(
                    "the ticket is for domain `{}`, not `{d}`: drop --domain or ask for a ticket for `{d}`",
                    output::clean(&t.domain)
                ),
            ));
        }
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.domain.clone(),
        (None, None) => unreachable!("clap requires --domain without --join"),
    };
    let mut config = NodeConfig::new(domain);
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.api_port = args.api_port;
    config.bootstrap = args.bootstrap;
    if let Some(t) = &ticket {
        for addr in &t.bootstrap {
            if !config.bootstrap.contains(addr) {
                config.bootstrap.push(addr.clone());
            }
        }
    }
    if let Some(d) = args.data_listen {
        config.data_listen = d;
    }
    config.validate()?;
    if dir.identity().exists() {
        bail!(
            "an identity already exists at `{}`: refusing to overwrite it (use another --data-dir)",
            dir.identity().display()
        );
    }
    // A node's database or config without its identity is a node whose key was lost or
    // moved: `init` must not make a new node there (and could not: its failure would leave
    // the database as it found it only by luck).
    for existing in [dir.db(), dir.config()] {
        if std::fs::symlink_metadata(&existing).is_ok() {
            bail!(
                "`{}` already holds a node's `{}` but no identity: restore `identity.key` from \
                 its backup to start that node again, or use another --data-dir for a new one",
                dir.root().display(),
                existing
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            );
        }
    }
    // The data directory is this user's alone (0700), and everything made in it private
    // (umask 077): it holds the key, the API token, products and other domains' data.
    let created = std::fs::symlink_metadata(dir.root()).is_err();
    if created {
        mesh_node::keyfile::create_private_dir(dir.root())
            .with_context(|| format!("cannot create `{}`", dir.root().display()))?;
    } else {
        match mesh_node::keyfile::make_private_dir(dir.root()) {
            Ok(_) => {}
            Err(unfit) if unfit.is_unfit() => return Err(fail(Failure::Usage, unfit.to_string())),
            Err(e) => return Err(e.into()),
        }
    }
    mesh_node::keyfile::restrict_umask();
    let founded = found_or_join(&dir, &config, args.charter.as_deref(), ticket.as_ref()).await;
    let founded = match founded {
        Ok(line) => write_config(&dir, &config).map(|()| line),
        Err(e) => Err(e),
    };
    let mesh_line = match founded {
        Ok(line) => line,
        Err(e) => {
            // Nothing half-made stays behind: the next `init` starts clean.
            if created {
                let _ = std::fs::remove_dir_all(dir.root());
            } else {
                let _ = std::fs::remove_file(dir.identity());
                let _ = std::fs::remove_dir_all(dir.db());
            }
            return Err(e);
        }
    };
    let identity = mesh_node::keyfile::load(&dir.identity())?;
    let pk = identity.public_key();
    crate::outln!(
        "initialised domain `{}` in {}\n  key {} (fingerprint {})\n  {mesh_line}\n  back up {}: it is this domain's identity, and a damaged copy will not start\nstart it with: meshnode run --data-dir {}",
        config.domain,
        dir.root().display(),
        pk,
        pk.fingerprint(),
        dir.identity().display(),
        dir.root().display()
    );
    Ok(())
}

/// Writes `config` as the node's `meshnode.toml`, whole or not at all: a file of its own
/// beside it, forced to disk, renamed over it, and the directory forced to disk.
pub(crate) fn write_config(dir: &DataDir, config: &NodeConfig) -> anyhow::Result<()> {
    use std::io::Write;
    let path = dir.config();
    let what = || format!("cannot write `{}`", path.display());
    let mut staged = tempfile::Builder::new()
        .prefix(".meshnode.toml-")
        .tempfile_in(dir.root())
        .with_context(what)?;
    staged
        .write_all(config.to_toml().as_bytes())
        .with_context(what)?;
    staged.as_file().sync_all().with_context(what)?;
    staged
        .persist(&path)
        .map_err(|e| e.error)
        .with_context(what)?;
    std::fs::File::open(dir.root())
        .and_then(|d| d.sync_all())
        .with_context(what)?;
    Ok(())
}

/// Creates the identity and the node's mesh: founded alone, from a written charter, or
/// joined with a ticket. Returns a line for the operator.
async fn found_or_join(
    dir: &DataDir,
    config: &NodeConfig,
    charter: Option<&std::path::Path>,
    ticket: Option<&mesh_protocol::governance::Ticket>,
) -> anyhow::Result<String> {
    let identity = mesh_node::keyfile::create(&dir.identity(), rand::random())?;
    let now = crate::mesh::now_ms();
    let store = mesh_node::store::Store::open(&dir.db())
        .with_context(|| format!("cannot create the database in `{}`", dir.db().display()))?;
    let line = if let Some(ticket) = ticket {
        let welcome = crate::mesh::join_network(ticket, &identity, &config.domain).await?;
        let state = mesh_node::governance::install(&store, &welcome.charter, &welcome.votes)?;
        if welcome.admitted {
            format!(
                "joined mesh `{}` ({}) with {} members",
                output::clean(&state.charter().name),
                state.id().short(),
                state.member_count()
            )
        } else {
            format!(
                "asked to join mesh `{}` ({}): the admission waits for the charter's quorum of governing domains (`meshnode governance status` on a member)",
                output::clean(&state.charter().name),
                state.id().short()
            )
        }
    } else if let Some(path) = charter {
        let signed = mesh_node::governance::read_charter(path, &identity, &config.domain, now)
            .map_err(|e| fail(Failure::Usage, e.to_string()))?;
        let state = mesh_node::governance::install(&store, &signed, &[])?;
        format!(
            "founded mesh `{}` ({}) from {}",
            output::clean(&state.charter().name),
            state.id().short(),
            path.display()
        )
    } else {
        let signed = mesh_node::governance::found_solo(&store, &identity, &config.domain, now)?;
        format!(
            "founded mesh `{}` ({}) with this domain as its sole governor; invite others with `meshnode mesh invite`",
            output::clean(&config.domain),
            mesh_protocol::governance::MeshId::of_body(signed.body()).short()
        )
    };
    store.flush_blocking()?;
    Ok(line)
}

pub(crate) async fn run(dir: DataDir, accept_rollback: bool) -> anyhow::Result<()> {
    // Every file and directory the daemon makes is its user's alone, whatever umask it was
    // started with.
    mesh_node::keyfile::restrict_umask();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let options = mesh_node::server::StartOptions { accept_rollback };
    mesh_node::server::run_with(dir, options, shutdown).await?;
    Ok(())
}

/// `meshnode publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Product name ([a-z0-9-]).
    name: String,
    /// Input file: .csv, .parquet or .arrow.
    #[arg(long)]
    from: PathBuf,
    /// One-line title.
    #[arg(long)]
    title: Option<String>,
    /// Description.
    #[arg(long)]
    description: Option<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Contract approval: auto or manual.
    #[arg(long, value_parser = ["auto", "manual"])]
    approval: Option<String>,
    /// Allowed purpose (repeatable; none means any).
    #[arg(long = "purpose")]
    purposes: Vec<String>,
    /// Column no contract may grant, e.g. PII (repeatable). A restriction stays from version
    /// to version, also while the column is absent from the data, until --unrestrict lifts it.
    #[arg(long = "restricted")]
    restricted: Vec<String>,
    /// Lift a column's restriction (repeatable): from this version on, agreements for all
    /// columns share it, in every version held.
    #[arg(long = "unrestrict", value_name = "COLUMN")]
    unrestrict: Vec<String>,
    /// Longest contract in days.
    #[arg(long)]
    max_days: Option<u32>,
    /// Input product, domain/product@version (repeatable).
    #[arg(long = "lineage")]
    lineage: Vec<String>,
    /// CSV value to read as null in every column, e.g. NA (repeatable or comma-separated;
    /// none by default: empty fields in text columns are empty strings, and are null in
    /// number, boolean, date, time of day and timestamp columns).
    #[arg(long = "null-values", value_name = "V", value_delimiter = ',')]
    null_values: Vec<String>,
    /// How to reach the owning team, e.g. an e-mail address (kept from the previous version).
    #[arg(long)]
    contact: Option<String>,
    /// Classify a column, `column=tag`, e.g. `email=pii` (repeatable; replaces the previous
    /// version's classification). The mesh's policies may require tagged columns restricted.
    #[arg(long = "classify", value_name = "COLUMN=TAG")]
    classify: Vec<String>,
    /// Freshness promise: the newest data is at most this many hours old.
    #[arg(long)]
    freshness_hours: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.dir.data_dir)?;
    let client = Client::for_data_dir(&dir)?;
    let from = std::path::absolute(&args.from)
        .with_context(|| format!("bad input path `{}`", args.from.display()))?;
    let request = PublishRequest {
        name: args.name,
        from: from.display().to_string(),
        title: args.title,
        description: args.description,
        tags: args.tags,
        approval: args.approval,
        purposes: args.purposes,
        restricted: args.restricted,
        unrestrict: args.unrestrict,
        from_file: mesh_node::sameview::identity(&from),
        max_days: args.max_days,
        lineage: args.lineage,
        null_values: args.null_values,
        contact: args.contact,
        classify: args.classify,
        freshness_hours: args.freshness_hours,
        progress: progress::id_for_terminal(),
    };
    let label = format!("publishing {}", request.name);
    let view: ProductView = progress::watch(
        &client,
        request.progress.as_deref(),
        progress::Kind::Publish,
        &label,
        client.post("/v1/publish", &request),
        // The input was read to its end.
        |view: &ProductView| {
            let size = std::fs::metadata(&from).ok()?.len();
            Some(ProgressView {
                bytes: size,
                rows: view.rows,
                total_bytes: Some(size),
            })
        },
    )
    .await?;
    if args.json {
        return output::json(&view);
    }
    crate::outln!(
        "published {} version {}: {} rows, {}, digest {}",
        output::clean(&view.product),
        view.version,
        view.rows,
        output::bytes(view.bytes),
        &view.digest[..16]
    );
    Ok(())
}

/// `meshnode catalog`.
#[derive(Debug, clap::Args)]
pub(crate) struct CatalogArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(subcommand)]
    action: Option<CatalogAction>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum CatalogAction {
    /// Every product in the mesh (the default).
    List,
    /// Products whose name, title, description, tags or columns contain TEXT.
    Search {
        /// Text to look for (case-insensitive).
        text: String,
    },
    /// One product in full: domain/product or domain@fingerprint/product.
    Show {
        /// The product.
        product: String,
    },
}

pub(crate) async fn catalog(args: CatalogArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.dir.data_dir)?;
    let client = Client::for_data_dir(&dir)?;
    let products: Vec<ProductView> = client.get("/v1/catalog").await?;
    match args.action.unwrap_or(CatalogAction::List) {
        CatalogAction::List => print_products(&products, args.json),
        CatalogAction::Search { text } => {
            let needle = text.to_lowercase();
            let hits: Vec<ProductView> = products
                .into_iter()
                .filter(|p| {
                    [&p.product, &p.title, &p.description]
                        .iter()
                        .any(|s| s.to_lowercase().contains(&needle))
                        || p.tags.iter().any(|t| t.to_lowercase().contains(&needle))
                        || p.schema
                            .iter()
                            .any(|c| c.name.to_lowercase().contains(&needle))
                })
                .collect();
            print_products(&hits, args.json)
        }
        CatalogAction::Show { product } => {
            let descriptors = products.iter().map(view_to_match);
            let found = pick(&product, descriptors, &products)?;
            if args.json {
                return output::json(found);
            }
            print_product(found);
            Ok(())
        }
    }
}

/// (domain, name, fingerprint) of a view, for resolving what the user typed.
fn view_to_match(p: &ProductView) -> (&str, &str, &str) {
    (&p.domain, &p.name, &p.fingerprint)
}

/// Resolves `domain/product` or `domain@fp/product` among catalog views.
fn pick<'a>(
    spec: &str,
    entries: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
    products: &'a [ProductView],
) -> anyhow::Result<&'a ProductView> {
    let Some((domain_part, name)) = spec.split_once('/') else {
        return Err(fail(
            Failure::Usage,
            format!("product `{spec}` is not of the form domain/product (see `meshnode catalog`)"),
        ));
    };
    let (domain, fp) = match domain_part.split_once('@') {
        Some((d, f)) => (
            d,
            Some(
                mesh_protocol::identity::parse_fingerprint(f)
                    .map_err(|e| fail(Failure::Usage, format!("product `{spec}`: {e}")))?,
            ),
        ),
        None => (domain_part, None),
    };
    let hits: Vec<usize> = entries
        .enumerate()
        .filter(|(_, (d, n, f))| {
            *d == domain && *n == name && fp.as_ref().is_none_or(|fp| f.starts_with(fp.as_str()))
        })
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [] => Err(fail(
            Failure::NotFound,
            format!(
                "unknown product `{spec}`: it is not in this node's catalog (run `meshnode catalog` to see what the mesh offers)"
            ),
        )),
        [i] => Ok(&products[*i]),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|i| {
                    format!(
                        "{}@{}/{}",
                        products[*i].domain, products[*i].fingerprint, products[*i].name
                    )
                })
                .collect();
            Err(fail(
                Failure::Usage,
                format!(
                    "`{spec}` is ambiguous: several keys claim domain `{domain}`; name one of: {}",
                    names.join(", ")
                ),
            ))
        }
    }
}

fn print_products(products: &[ProductView], json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(&products);
    }
    if products.is_empty() {
        crate::outln!("the catalog is empty: publish with `meshnode publish NAME --from FILE`");
        return Ok(());
    }
    let mut table = output::table(&[
        "product", "ver", "rows", "size", "approval", "status", "title",
    ]);
    for p in products {
        table.add_row(output::row([
            format!(
                "{}{}{}",
                p.product,
                if p.local { " *" } else { "" },
                if p.compliant { "" } else { " !" }
            ),
            p.version.to_string(),
            p.rows.to_string(),
            output::bytes(p.bytes),
            p.approval.clone(),
            p.status.clone(),
            p.title.clone(),
        ]));
    }
    crate::outln!("{table}\n(* = published by this node)");
    if products.iter().any(|p| !p.compliant) {
        crate::outln!(
            "(! = breaks the mesh's policies in force, cannot be negotiated: `meshnode catalog show PRODUCT`)"
        );
    }
    Ok(())
}

/// One product in full. Every string in a descriptor comes from its publisher (a peer, or a
/// file), so each goes through [`output::clean`].
fn print_product(p: &ProductView) {
    use output::{clean, clean_join};
    crate::outln!(
        "{}  (version {}, {})",
        clean(&p.product),
        p.version,
        clean(&p.status)
    );
    crate::outln!("  title        {}", clean(&p.title));
    if !p.description.is_empty() {
        crate::outln!("  description  {}", clean(&p.description));
    }
    crate::outln!(
        "  owner        {} (fingerprint {})",
        clean(&p.owner),
        clean(&p.fingerprint)
    );
    crate::outln!("  rows / size  {} / {}", p.rows, output::bytes(p.bytes));
    crate::outln!("  digest       {}", clean(&p.digest));
    crate::outln!("  tags         {}", clean_join(&p.tags, ", "));
    crate::outln!(
        "  sla          updated {}, fresh within {} h, availability {:.2} %",
        clean(&p.update_frequency),
        p.freshness_hours,
        p.availability_bp as f64 / 100.0
    );
    crate::outln!(
        "  policy       approval {}, purposes [{}], max {} days, restricted [{}]",
        clean(&p.approval),
        clean_join(&p.purposes, ", "),
        p.max_contract_days,
        clean_join(&p.restricted, ", ")
    );
    if !p.lineage.is_empty() {
        crate::outln!("  lineage      {}", clean_join(&p.lineage, ", "));
    }
    if !p.contact.is_empty() {
        crate::outln!("  contact      {}", clean(&p.contact));
    }
    if p.compliant {
        crate::outln!("  compliance   keeps the mesh's policies in force");
    } else {
        crate::outln!("  compliance   BREAKS the mesh's policies in force (cannot be negotiated):");
        for v in &p.violations {
            crate::outln!(
                "    rule {}: {}; fix: {}",
                clean(&v.rule),
                clean(&v.problem),
                clean(&v.fix)
            );
        }
    }
    crate::outln!("  schema");
    for c in &p.schema {
        let restricted = if p.restricted.contains(&c.name) {
            "  [restricted]"
        } else {
            ""
        };
        crate::outln!(
            "    {:<24} {}{}{}",
            clean(&c.name),
            clean(&c.data_type),
            if c.nullable { "" } else { " not null" },
            restricted
        );
        if let Some(tags) = p.column_tags.get(&c.name) {
            crate::outln!("      classified {}", clean_join(tags, ", "));
        }
    }
}

pub(crate) async fn status(dir: DataDir, json: bool) -> anyhow::Result<()> {
    let client = Client::for_data_dir(&dir)?;
    let status: StatusView = client.get("/v1/status").await?;
    if json {
        return output::json(&status);
    }
    crate::outln!(
        "domain     {} (key {}, fingerprint {})",
        status.domain,
        &status.public_key[..16],
        status.fingerprint
    );
    crate::outln!("peer id    {}", status.peer_id);
    for a in &status.listen_addrs {
        crate::outln!("listen     {a}");
    }
    if let Some(d) = &status.data_addr {
        crate::outln!("data plane {d}");
    }
    crate::outln!("api        {}", status.api_addr);
    crate::outln!("peers      {}", status.peers);
    crate::outln!(
        "catalog    {} products, {:.1} of {:.0} MiB",
        status.catalog_size,
        status.catalog_bytes as f64 / (1 << 20) as f64,
        status.catalog_max_bytes as f64 / (1 << 20) as f64
    );
    if !status.catalog_largest_holders.is_empty() {
        let holders: Vec<String> = status
            .catalog_largest_holders
            .iter()
            .map(|h| {
                format!(
                    "{}@{} {:.1} MiB",
                    output::clean(h.domain.as_deref().unwrap_or("?")),
                    h.fingerprint,
                    h.bytes as f64 / (1 << 20) as f64
                )
            })
            .collect();
        crate::outln!("           largest: {}", holders.join(", "));
    }
    crate::outln!(
        "mesh       {} ({}): {} members, {} governance votes, policies version {}, {} non-member connections refused",
        output::clean(&status.mesh),
        status.mesh_id,
        status.members,
        status.governance_votes,
        status.policy_version,
        status.refused_non_members
    );
    if !status.member {
        crate::outln!(
            "           this domain is NOT a member: removed from the mesh, or its admission waits for the governing domains (`meshnode governance status` on a member)"
        );
    }
    for product in &status.non_compliant_products {
        crate::outln!(
            "           {} breaks the mesh's policies: `meshnode catalog show {}/{}`",
            output::clean(product),
            output::clean(&status.domain),
            output::clean(product)
        );
    }
    let rejected: Vec<String> = status
        .rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    crate::outln!(
        "rejected   {}",
        if rejected.is_empty() {
            "none".to_owned()
        } else {
            rejected.join(", ")
        }
    );
    Ok(())
}

pub(crate) async fn peers(dir: DataDir, json: bool) -> anyhow::Result<()> {
    let client = Client::for_data_dir(&dir)?;
    let peers: Vec<PeerView> = client.get("/v1/peers").await?;
    if json {
        return output::json(&peers);
    }
    if peers.is_empty() {
        crate::outln!("no peers connected: check the bootstrap addresses in meshnode.toml");
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut table = output::table(&["domain", "peer id", "connected", "rtt", "addresses"]);
    for p in peers {
        // Domains and addresses are what the peer says about itself: cleaned, then the
        // addresses joined with our own line breaks.
        table.add_row(vec![
            output::clean(p.domain.as_deref().unwrap_or("?")).into_owned(),
            output::clean(&p.peer_id).into_owned(),
            format!("{} s", now.saturating_sub(p.connected_since_ms) / 1000),
            p.rtt_ms
                .map(|r| format!("{r:.1} ms"))
                .unwrap_or_else(|| "-".into()),
            output::clean_join(&p.addresses, "\n"),
        ]);
    }
    crate::outln!("{table}");
    Ok(())
}

/// `meshnode fetch`.
#[derive(Debug, clap::Args)]
pub(crate) struct FetchArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The product: domain/product or domain@fingerprint/product.
    product: String,
    /// Output file, relative to the current directory, or `-` for standard output (an Arrow
    /// IPC stream). The extension names the format: .arrow (also .ipc, .feather) an Arrow
    /// IPC file, .arrows an Arrow IPC stream, .parquet (also .pq) Parquet; --format
    /// overrides it. The directory must exist; it may not be inside a node's data directory
    /// (except its received/ directory).
    #[arg(long, value_name = "FILE|-")]
    out: PathBuf,
    /// Output format when the extension of --out does not say, or says otherwise.
    #[arg(long, value_parser = ["arrow", "arrows", "parquet"])]
    format: Option<String>,
    /// Replace the output file if it exists (otherwise the fetch is refused).
    #[arg(long)]
    force: bool,
    /// Agreement id or unambiguous id prefix (default: the usable agreement for the product).
    #[arg(long)]
    agreement: Option<String>,
    /// Product version (default: the latest the agreement covers).
    #[arg(long)]
    version: Option<u64>,
    /// Arrow IPC compression on the wire and in the file.
    #[arg(long, default_value = "none", value_parser = ["none", "lz4", "zstd"])]
    compression: String,
    /// Stripe the fetch of a whole product over this many connections (1 to 8), for long,
    /// fast paths between clouds (default: the node's `data_link.connections`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    connections: Option<u8>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Where a fetch's data goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// `--out -`: an Arrow IPC stream on standard output.
    Stdout,
    /// A file in this format.
    File(OutputFormat),
}

/// What `--out` and `--format` ask for, refused (as a usage error, before anything is sent)
/// when the format cannot be told or standard output would get something other than a
/// stream.
fn output_target(out: &std::path::Path, format: Option<&str>) -> anyhow::Result<Target> {
    let format = format.and_then(OutputFormat::from_name);
    if out.as_os_str() == "-" {
        return match format {
            None | Some(OutputFormat::Arrows) => Ok(Target::Stdout),
            Some(other) => Err(fail(
                Failure::Usage,
                format!(
                    "`--out -` writes an Arrow IPC stream, not {other}: drop --format, or name a file such as --out data.{other}"
                ),
            )),
        };
    }
    if let Some(format) = format.or_else(|| OutputFormat::from_extension(out)) {
        return Ok(Target::File(format));
    }
    let shown = output::clean(&out.display().to_string()).into_owned();
    let named = match out.extension() {
        Some(e) => format!("from `.{}`", output::clean(&e.to_string_lossy())),
        None => "from a name without an extension".to_owned(),
    };
    Err(fail(
        Failure::Usage,
        format!(
            "`--out {shown}`: cannot tell the output format {named}; name the file .arrow (Arrow IPC file), .arrows (Arrow IPC stream) or .parquet (Parquet), or pass --format arrow|arrows|parquet"
        ),
    ))
}

pub(crate) async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;

    let target = output_target(&args.out, args.format.as_deref())?;
    if target == Target::Stdout && args.json {
        return Err(fail(
            Failure::Usage,
            "`--out -` puts the data on standard output, so --json cannot go there too: drop one of them",
        ));
    }
    let dir = client::data_dir(args.dir.data_dir)?;
    let client = Client::for_data_dir(&dir)?;
    let compression = match args.compression.as_str() {
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    };
    let mut request = FetchRequestBody {
        product: args.product.clone(),
        out: String::new(),
        out_dir: None,
        agreement: args.agreement,
        version: args.version,
        compression,
        force: args.force,
        format: OutputFormat::Arrows,
        progress: progress::id_for_terminal(),
        narrowing: None,
        connections: args.connections,
    };
    let label = format!("fetching {}", args.product);
    let format = match target {
        Target::File(format) => format,
        Target::Stdout => {
            let response = progress::watch(
                &client,
                request.progress.as_deref(),
                progress::Kind::Fetch,
                &label,
                client.post_for_body("/v1/fetch/stream", &request),
                crate::stream::announced,
            )
            .await
            .with_context(|| format!("fetching `{}` failed", args.product))?;
            let delivered = crate::stream::copy_to_stdout(response)
                .await
                .with_context(|| format!("fetching `{}` failed", args.product))?;
            // Standard output is the data: a word for a person watching, nothing otherwise.
            if std::io::stderr().is_terminal() {
                eprintln!(
                    "fetched {}: {} rows, {} verified, as an Arrow IPC stream on standard output",
                    output::clean(&args.product),
                    delivered.rows,
                    output::bytes(delivered.bytes)
                );
            }
            return Ok(());
        }
    };
    // The daemon has another working directory: send the path resolved against ours.
    let out = std::path::absolute(&args.out)
        .with_context(|| format!("bad output path `{}`", args.out.display()))?;
    request.out = out
        .to_str()
        .with_context(|| {
            format!(
                "the output path `{}` is not valid UTF-8: choose another --out",
                out.display()
            )
        })?
        .to_owned();
    // What this command sees there: the daemon refuses a directory it sees otherwise.
    request.out_dir = out.parent().and_then(mesh_node::sameview::identity);
    request.format = format;
    let outcome: FetchOutcome = progress::watch(
        &client,
        request.progress.as_deref(),
        progress::Kind::Fetch,
        &label,
        client.post("/v1/fetch", &request),
        |outcome: &FetchOutcome| {
            Some(ProgressView {
                bytes: outcome.bytes,
                rows: outcome.rows,
                total_bytes: None,
            })
        },
    )
    .await
    .with_context(|| format!("fetching `{}` failed", args.product))?;
    if args.json {
        return output::json(&outcome);
    }
    let mut resumed = if outcome.resumed_from_batch > 0 {
        format!(" (resumed after batch {})", outcome.resumed_from_batch)
    } else {
        String::new()
    };
    if outcome.connections > 1 {
        resumed.push_str(&format!(" over {} connections", outcome.connections));
    }
    crate::outln!(
        "fetched {} version {}: {} rows, {} in {:.2} s ({:.1} MiB/s){resumed}\n  -> {} ({})\n  agreement {}  digest {}",
        args.product,
        outcome.version,
        outcome.rows,
        output::bytes(outcome.bytes),
        outcome.seconds,
        outcome.mib_s,
        outcome.out,
        outcome.format,
        &outcome.agreement[..12],
        &outcome.digest[..16],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{OutputFormat, Target, output_target};
    use crate::exit::Failure;

    #[test]
    fn the_output_format_follows_the_extension_or_format() {
        for (out, format, want) in [
            ("d.arrow", None, Target::File(OutputFormat::Arrow)),
            ("dir/d.ipc", None, Target::File(OutputFormat::Arrow)),
            ("d.feather", None, Target::File(OutputFormat::Arrow)),
            ("d.ARROWS", None, Target::File(OutputFormat::Arrows)),
            ("d.parquet", None, Target::File(OutputFormat::Parquet)),
            ("d.pq", None, Target::File(OutputFormat::Parquet)),
            // --format wins over the extension, and names a format where none is.
            (
                "d.arrow",
                Some("parquet"),
                Target::File(OutputFormat::Parquet),
            ),
            ("d.dat", Some("arrows"), Target::File(OutputFormat::Arrows)),
            (
                "no_extension",
                Some("arrow"),
                Target::File(OutputFormat::Arrow),
            ),
            ("-", None, Target::Stdout),
            ("-", Some("arrows"), Target::Stdout),
        ] {
            assert_eq!(
                output_target(Path::new(out), format).unwrap(),
                want,
                "{out}"
            );
        }
    }

    #[test]
    fn an_unknown_format_is_refused_as_usage_with_the_choices() {
        for (out, format) in [
            ("x.csv", None),
            ("dir/x.jsonl", None),
            ("no_extension", None),
            ("-", Some("parquet")),
            ("-", Some("arrow")),
        ] {
            let e = output_target(Path::new(out), format).unwrap_err();
            assert_eq!(Failure::of(&e), Failure::Usage, "{out}");
            let text = e.to_string();
            if out == "-" {
                assert!(text.contains("writes an Arrow IPC stream"), "{text}");
            } else {
                for choice in [
                    ".arrow",
                    ".arrows",
                    ".parquet",
                    "--format arrow|arrows|parquet",
                ] {
                    assert!(text.contains(choice), "{out}: {text}");
                }
            }
        }
        let e = output_target(Path::new("x.CSV"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("from `.CSV`"), "{e}");
    }
}
