//! One function per command.

use std::path::PathBuf;

use anyhow::{Context, bail};
use mesh_node::dataplane::{Compression, FetchOutcome};
use mesh_node::views::{FetchRequestBody, PeerView, ProductView, PublishRequest, StatusView};
use mesh_node::{DataDir, NodeConfig};

use crate::DirArg;
use crate::client::{self, Client};
use crate::exit::{Failure, fail};
use crate::output;

/// `meshnode init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Data directory to create (default: ~/.meshnode).
    #[arg(long, env = "MESHNODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Domain name this node serves, e.g. `sales` ([a-z0-9-]).
    #[arg(long)]
    domain: String,
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
}

pub(crate) fn init(args: InitArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.data_dir)?;
    let mut config = NodeConfig::new(args.domain);
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.api_port = args.api_port;
    config.bootstrap = args.bootstrap;
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
    std::fs::create_dir_all(dir.root())
        .with_context(|| format!("cannot create `{}`", dir.root().display()))?;
    let identity = mesh_node::keyfile::create(&dir.identity(), rand::random())?;
    std::fs::write(dir.config(), config.to_toml())
        .with_context(|| format!("cannot write `{}`", dir.config().display()))?;
    let pk = identity.public_key();
    crate::outln!(
        "initialised domain `{}` in {}\n  key {} (fingerprint {})\n  back up {}: it is this domain's identity, and a damaged copy will not start\nstart it with: meshnode run --data-dir {}",
        config.domain,
        dir.root().display(),
        pk,
        pk.fingerprint(),
        dir.identity().display(),
        dir.root().display()
    );
    Ok(())
}

pub(crate) async fn run(dir: DataDir, accept_rollback: bool) -> anyhow::Result<()> {
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
    /// Column no contract may grant, e.g. PII (repeatable).
    #[arg(long = "restricted")]
    restricted: Vec<String>,
    /// Longest contract in days.
    #[arg(long)]
    max_days: Option<u32>,
    /// Input product, domain/product@version (repeatable).
    #[arg(long = "lineage")]
    lineage: Vec<String>,
    /// CSV value to read as null in every column, e.g. NA (repeatable or comma-separated;
    /// none by default: empty fields in text columns are empty strings, and are null in
    /// number, boolean, date and timestamp columns).
    #[arg(long = "null-values", value_name = "V", value_delimiter = ',')]
    null_values: Vec<String>,
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
        max_days: args.max_days,
        lineage: args.lineage,
        null_values: args.null_values,
    };
    let view: ProductView = client.post("/v1/publish", &request).await?;
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
            format!("{}{}", p.product, if p.local { " *" } else { "" }),
            p.version.to_string(),
            p.rows.to_string(),
            output::bytes(p.bytes),
            p.approval.clone(),
            p.status.clone(),
            p.title.clone(),
        ]));
    }
    crate::outln!("{table}\n(* = published by this node)");
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
    crate::outln!("catalog    {} products", status.catalog_size);
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
    /// Output Arrow IPC file (.arrow, .arrows or .ipc; other formats' extensions such as
    /// .parquet or .csv are refused), relative to the current directory.
    /// Its directory must exist; it may not be inside a node's data directory (except its
    /// received/ directory).
    #[arg(long)]
    out: PathBuf,
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Extensions of other data formats: a fetch writes Arrow IPC only, so an `--out` named
/// like one of these would hold something other than its name says. (`.arrow`, `.arrows`,
/// `.ipc` and `.feather`, the Arrow IPC file format, are right; other names are left to the
/// daemon's checks of the output path.)
const OTHER_FORMATS: [&str; 12] = [
    "parquet", "pq", "csv", "tsv", "json", "jsonl", "ndjson", "avro", "orc", "xlsx", "xls", "txt",
];

/// Refuses an `--out` the daemon cannot honour, before anything is sent: `-`, and a name
/// whose extension promises another format (`x.parquet` would hold Arrow IPC otherwise).
fn check_out(out: &std::path::Path) -> anyhow::Result<()> {
    if out.as_os_str() == "-" {
        return Err(fail(
            Failure::Usage,
            "`--out -` is not supported: the daemon writes an Arrow IPC file; name a file such as --out data.arrow",
        ));
    }
    let Some(extension) = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
    else {
        return Ok(());
    };
    if OTHER_FORMATS.contains(&extension.as_str()) {
        return Err(fail(
            Failure::Usage,
            format!(
                "`--out {}`: a fetch writes an Arrow IPC file, not `.{extension}`; name it .arrow (or .arrows, .ipc) and convert afterwards, e.g. to Parquet with `python -c 'import pyarrow.ipc as i, pyarrow.parquet as p; p.write_table(i.open_file(\"data.arrow\").read_all(), \"data.parquet\")'` or DuckDB",
                output::clean(&out.display().to_string()),
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;

    check_out(&args.out)?;
    let dir = client::data_dir(args.dir.data_dir)?;
    let client = Client::for_data_dir(&dir)?;
    // The daemon has another working directory: send the path resolved against ours.
    let out = std::path::absolute(&args.out)
        .with_context(|| format!("bad output path `{}`", args.out.display()))?;
    let out_text = out
        .to_str()
        .with_context(|| {
            format!(
                "the output path `{}` is not valid UTF-8: choose another --out",
                out.display()
            )
        })?
        .to_owned();
    let compression = match args.compression.as_str() {
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    };
    let request = FetchRequestBody {
        product: args.product.clone(),
        out: out_text,
        agreement: args.agreement,
        version: args.version,
        compression,
        force: args.force,
    };
    let spinner = (!args.json && std::io::stdout().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(format!("fetching {} into {}", args.product, out.display()));
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    });
    let result: anyhow::Result<FetchOutcome> = client.post("/v1/fetch", &request).await;
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let outcome = result.with_context(|| format!("fetching `{}` failed", args.product))?;
    if args.json {
        return output::json(&outcome);
    }
    let resumed = if outcome.resumed_from_batch > 0 {
        format!(" (resumed after batch {})", outcome.resumed_from_batch)
    } else {
        String::new()
    };
    crate::outln!(
        "fetched {} version {}: {} rows, {} in {:.2} s ({:.1} MiB/s){resumed}\n  -> {}\n  agreement {}  digest {}",
        args.product,
        outcome.version,
        outcome.rows,
        output::bytes(outcome.bytes),
        outcome.seconds,
        outcome.mib_s,
        outcome.out,
        &outcome.agreement[..12],
        &outcome.digest[..16],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn out_naming_another_format_is_refused_as_usage() {
        use std::path::Path;
        for ok in [
            "d.arrow",
            "d.ARROWS",
            "dir/d.ipc",
            "d.feather",
            "no_extension",
        ] {
            assert!(super::check_out(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in ["x.parquet", "x.CSV", "-", "dir/x.jsonl"] {
            let e = super::check_out(Path::new(bad)).unwrap_err();
            assert_eq!(
                crate::exit::Failure::of(&e),
                crate::exit::Failure::Usage,
                "{bad}"
            );
            let text = e.to_string();
            assert!(text.contains("Arrow IPC"), "{text}");
        }
        let e = super::check_out(Path::new("x.parquet"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not `.parquet`") && e.contains("pyarrow"), "{e}");
    }
}
