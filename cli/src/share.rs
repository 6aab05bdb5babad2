//! `meshnode share ...`: sharing contracts, and `meshnode audit`.

use mesh_node::agreements::{ListCursor, Role};
use mesh_node::odcs::DataContract;
use mesh_node::views::{
    AgreementView, ArchiveRequest, ArchiveView, AuditView, ReasonRequest, SharePage, ShareQuery,
    ShareRequest,
};
use mesh_protocol::ContractState;

use crate::DirArg;
use crate::client::{self, Client};
use crate::exit::{Failure, fail};
use crate::output::{self, clean};

/// `meshnode share`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShareArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(subcommand)]
    action: ShareAction,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum ShareAction {
    /// Ask a product's provider for a contract; waits for its answer.
    Request {
        /// The product: domain/product or domain@fingerprint/product.
        product: String,
        /// Why you need the data (the provider may allow only some purposes).
        #[arg(long)]
        purpose: String,
        /// Columns wanted, comma-separated. Default: every shareable column of the current
        /// version, listed in the agreement (columns added later are not covered). `*` asks
        /// for all current and future non-restricted columns.
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// One column wanted, its name taken whole (a name holding a comma, such as
        /// "Revenue, EUR", which --columns would split); repeatable, and added to --columns.
        #[arg(long = "column", value_name = "NAME")]
        column: Vec<String>,
        /// Ask for all current and future non-restricted columns (the same as `--columns '*'`):
        /// the agreement then covers columns added by later versions, and the approver sees so.
        #[arg(long, conflicts_with_all = ["columns", "column"])]
        all_columns_including_future: bool,
        /// Row filter, a SQL condition, e.g. "region IN ('EU', 'US') AND amount > 10".
        #[arg(long)]
        filter: Option<String>,
        /// Validity in days (default: 30, or the product's maximum if lower).
        #[arg(long, conflicts_with = "valid_for")]
        days: Option<u32>,
        /// Validity as a duration, for contracts shorter than a day: 90s, 15m, 12h or 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_validity)]
        valid_for: Option<u64>,
    },
    /// The contracts this node holds, as provider or consumer: the newest 1,000 unless
    /// `--limit` says otherwise, newest first; older ones with `--before`.
    List {
        /// Contracts to show: the newest (after `--before`), at most this many and at most
        /// 8 MiB of stored contracts.
        #[arg(
            long,
            default_value_t = SHARE_PAGE,
            value_parser = clap::value_parser!(u64).range(1..=MAX_SHARE_PAGE)
        )]
        limit: u64,
        /// Show the contracts after this position: the `MS-ID` a listing names for its next
        /// page, or a time in ms since the epoch (the contracts created before it).
        #[arg(long, value_name = "MS-ID")]
        before: Option<ListCursor>,
        /// Only the contracts where this node is the `provider` or the `consumer`.
        #[arg(long)]
        role: Option<Role>,
        /// Only the contracts in this state now: requested, pending, agreed, rejected,
        /// revoked or expired.
        #[arg(long)]
        state: Option<ContractState>,
    },
    /// Requests waiting for this node's operator (`share accept` / `share reject`).
    Pending,
    /// One contract in full.
    Show {
        /// Contract id: the full id or at least 8 of its hex digits.
        id: String,
        /// Print it as an Open Data Contract Standard v3 YAML document.
        #[arg(long)]
        odcs: bool,
    },
    /// Accept a pending request (provider).
    Accept {
        /// Contract id: the full id or at least 8 of its hex digits.
        id: String,
    },
    /// Reject a pending request (provider).
    Reject {
        /// Contract id: the full id or at least 8 of its hex digits.
        id: String,
        /// Why, for the consumer.
        #[arg(long)]
        reason: String,
    },
    /// End an agreed contract (provider or consumer).
    Revoke {
        /// Contract id: the full id or at least 8 of its hex digits.
        id: String,
        /// Why, for the other party.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `--valid-for`: a whole number with a unit (`s`, `m`, `h` or `d`), in seconds.
pub(crate) fn parse_validity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: write 90s, 15m, 12h or 7d"
            ));
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write 90s, 15m, 12h or 7d"))?;
    match number.checked_mul(unit_secs) {
        Some(0) => Err("the validity must be at least one second".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("`{text}` is too long")),
    }
}

/// The API path of a contract; refuses text that cannot be an id before it reaches a URL.
fn id_path(id: &str, suffix: &str) -> anyhow::Result<String> {
    let id = id.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(fail(
            Failure::Usage,
            format!(
                "`{id}` is not a contract id: give the full id or at least 8 of its hex digits (see `meshnode share list`)"
            ),
        ));
    }
    Ok(format!("/v1/share/{id}{suffix}"))
}

pub(crate) async fn share(args: ShareArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.dir.data_dir)?;
    let client = Client::for_data_dir(&dir)?;
    let json = args.json;
    match args.action {
        ShareAction::Request {
            product,
            purpose,
            columns,
            column,
            filter,
            days,
            valid_for,
            all_columns_including_future,
        } => {
            let request = ShareRequest {
                product,
                purpose,
                columns: wanted_columns(columns, column),
                filter,
                days,
                valid_for_secs: valid_for,
                all_columns_including_future,
            };
            let view: AgreementView = client.post("/v1/share/request", &request).await?;
            if json {
                output::json(&view)?;
            }
            match view.state {
                ContractState::Rejected => {
                    return Err(fail(
                        Failure::Refused,
                        format!(
                            "{} rejected the request for {}: {} (contract {}; see `meshnode share show {}`)",
                            clean(&view.provider),
                            clean(&view.product),
                            clean(view.reason.as_deref().unwrap_or("no reason given")),
                            view.short_id,
                            view.short_id
                        ),
                    ));
                }
                _ if json => {}
                ContractState::Agreed => {
                    crate::outln!(
                        "agreed: contract {} with {} for {} ({}), columns {}, until {}",
                        view.short_id,
                        clean(&view.provider),
                        clean(&view.product),
                        clean(&view.purpose),
                        columns_text(&view),
                        view.expires_at
                    );
                    crate::outln!(
                        "fetch with: meshnode fetch {} --agreement {}",
                        clean(&view.product),
                        view.short_id
                    );
                }
                ContractState::Pending | ContractState::Requested => crate::outln!(
                    "pending: contract {} waits for {}'s operator to accept it; this node checks every few seconds (see `meshnode share show {}`)",
                    view.short_id,
                    clean(&view.provider),
                    view.short_id
                ),
                state => crate::outln!("contract {} is {state}", view.short_id),
            }
            Ok(())
        }
        ShareAction::List {
            limit,
            before,
            role,
            state,
        } => {
            let query = ShareQuery {
                limit: Some(limit as usize),
                before,
                role,
                state,
            };
            let page: SharePage = client
                .get(&format!("/v1/share/page{}", query.to_query_string()))
                .await?;
            if json {
                // The array `share list --json` always printed; the rest is in the note.
                output::json(&page.contracts)?;
            } else if page.contracts.is_empty() {
                if query.before.is_none() && query.role.is_none() && query.state.is_none() {
                    crate::outln!(
                        "no contracts yet: ask for one with `meshnode share request DOMAIN/PRODUCT --purpose P`"
                    );
                } else {
                    crate::outln!("no contracts match");
                }
            } else {
                print_table(&page.contracts);
            }
            if let Some(next) = page.next_before {
                eprintln!(
                    "note: {} contracts shown, newest first; {} more: see them with `meshnode share list{}` (or a larger --limit, up to {MAX_SHARE_PAGE})",
                    page.contracts.len(),
                    page.more,
                    list_args(&ShareQuery {
                        before: Some(next),
                        ..query
                    })
                );
            }
            Ok(())
        }
        ShareAction::Pending => {
            let views: Vec<AgreementView> = client.get("/v1/share/pending").await?;
            if json {
                return output::json(&views);
            }
            if views.is_empty() {
                crate::outln!("no requests wait for a decision");
                return Ok(());
            }
            let mut table = output::table(&[
                "id", "consumer", "product", "purpose", "columns", "filter", "until",
            ]);
            for v in &views {
                // Consumer domain, purpose, columns and filter are the requester's words.
                table.add_row(output::row([
                    v.short_id.clone(),
                    v.consumer.clone(),
                    v.product.clone(),
                    v.purpose.clone(),
                    columns_text(v),
                    v.filter.clone().unwrap_or_else(|| "-".into()),
                    date(&v.expires_at).to_owned(),
                ]));
            }
            crate::outln!(
                "{table}\ndecide with `meshnode share accept ID` or `meshnode share reject ID --reason R`"
            );
            Ok(())
        }
        ShareAction::Show { id, odcs: true } => {
            let document: DataContract = client.get(&id_path(&id, "/odcs")?).await?;
            if json {
                return output::json(&document);
            }
            crate::outp!("{}", document.to_yaml()?);
            Ok(())
        }
        ShareAction::Show { id, odcs: false } => {
            let view: AgreementView = client.get(&id_path(&id, "")?).await?;
            if json {
                return output::json(&view);
            }
            print_view(&view);
            Ok(())
        }
        ShareAction::Accept { id } => {
            let view: AgreementView = client
                .post(&id_path(&id, "/accept")?, &serde_json::json!({}))
                .await?;
            if json {
                return output::json(&view);
            }
            crate::outln!(
                "accepted: contract {} gives {} {} ({}) until {}",
                view.short_id,
                clean(&view.consumer),
                clean(&view.product),
                columns_text(&view),
                view.expires_at
            );
            Ok(())
        }
        ShareAction::Reject { id, reason } => {
            let body = ReasonRequest {
                reason: Some(reason),
            };
            let view: AgreementView = client.post(&id_path(&id, "/reject")?, &body).await?;
            if json {
                return output::json(&view);
            }
            crate::outln!(
                "rejected: contract {} from {} for {}",
                view.short_id,
                clean(&view.consumer),
                clean(&view.product)
            );
            Ok(())
        }
        ShareAction::Revoke { id, reason } => {
            let body = ReasonRequest { reason };
            let view: AgreementView = client.post(&id_path(&id, "/revoke")?, &body).await?;
            if json {
                return output::json(&view);
            }
            crate::outln!(
                "revoked: contract {} for {} between {} and {}; {} is told directly and through the mesh",
                view.short_id,
                clean(&view.product),
                clean(&view.provider),
                clean(&view.consumer),
                clean(view.counterparty())
            );
            Ok(())
        }
    }
}

/// Contracts `share list` shows unless told otherwise.
const SHARE_PAGE: u64 = mesh_node::views::DEFAULT_SHARE_PAGE as u64;
/// Most contracts `share list --limit` may ask for.
const MAX_SHARE_PAGE: u64 = mesh_node::views::MAX_SHARE_PAGE as u64;

/// The arguments of `share list` that ask for `query` (each with its leading space).
fn list_args(query: &ShareQuery) -> String {
    let mut args = String::new();
    if let Some(limit) = query.limit.filter(|n| *n as u64 != SHARE_PAGE) {
        args.push_str(&format!(" --limit {limit}"));
    }
    if let Some(before) = &query.before {
        args.push_str(&format!(" --before {before}"));
    }
    if let Some(role) = query.role {
        args.push_str(&format!(" --role {}", role.as_str()));
    }
    if let Some(state) = query.state {
        args.push_str(&format!(" --state {state}"));
    }
    args
}

/// `2024-03-01T12:00:00.000Z` -> `2024-03-01`.
fn date(rfc3339: &str) -> &str {
    rfc3339.get(..10).unwrap_or(rfc3339)
}

/// The columns of `--columns` (split at commas) and of each `--column` (whole), in that
/// order; none given: the default.
fn wanted_columns(listed: Option<Vec<String>>, whole: Vec<String>) -> Option<Vec<String>> {
    if listed.is_none() && whole.is_empty() {
        return None;
    }
    let mut columns = listed.unwrap_or_default();
    columns.extend(whole);
    Some(columns)
}

/// The columns of a contract for people: names come from the product's schema or the
/// request, so they are cleaned.
/// The columns as the approver must see them: the pinned list, or `*` spelled out.
fn columns_text(v: &AgreementView) -> String {
    match (&v.columns, &v.granted_columns) {
        (Some(pinned), _) => output::clean_join(pinned, ","),
        (None, Some(now)) => format!(
            "* = ALL current and FUTURE non-restricted columns (now {})",
            output::clean_join(now, ",")
        ),
        (None, None) => "* = ALL current and FUTURE non-restricted columns".into(),
    }
}

fn role(role: Role) -> &'static str {
    match role {
        Role::Provider => "provider",
        Role::Consumer => "consumer",
    }
}

fn print_table(views: &[AgreementView]) {
    let mut table = output::table(&[
        "id", "role", "product", "with", "state", "purpose", "columns", "until",
    ]);
    for v in views {
        table.add_row(output::row([
            v.short_id.clone(),
            role(v.role).to_owned(),
            v.product.clone(),
            v.counterparty().to_owned(),
            v.state.to_string(),
            v.purpose.clone(),
            columns_text(v),
            date(&v.expires_at).to_owned(),
        ]));
    }
    crate::outln!("{table}");
}

/// One contract in full; every string the other party wrote is cleaned.
fn print_view(v: &AgreementView) {
    crate::outln!("contract {}  ({})", v.short_id, v.state);
    crate::outln!("  id         {}", v.id);
    crate::outln!(
        "  product    {} (versions {})",
        clean(&v.product),
        clean(&v.version_range)
    );
    crate::outln!(
        "  provider   {} (key {})",
        clean(&v.provider),
        clean(&v.provider_key)
    );
    crate::outln!(
        "  consumer   {} (key {})",
        clean(&v.consumer),
        clean(&v.consumer_key)
    );
    crate::outln!("  this node  {}", role(v.role));
    crate::outln!("  purpose    {}", clean(&v.purpose));
    crate::outln!("  columns    {}", columns_text(v));
    crate::outln!(
        "  filter     {}",
        clean(v.filter.as_deref().unwrap_or("none (all rows)"))
    );
    crate::outln!(
        "  valid      {} .. {}",
        mesh_node::views::rfc3339(v.created_at_ms),
        v.expires_at
    );
    if let Some(reason) = &v.reason {
        let who = match (v.state, v.revoked_by) {
            (ContractState::Revoked, Some(by)) => format!("revoked by the {}", role(by)),
            (ContractState::Revoked, None) => "revoked".to_owned(),
            _ => format!("rejected by {}", clean(&v.provider)),
        };
        crate::outln!("  reason     {} ({who})", clean(reason));
    }
}

/// `meshnode audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Check the whole hash chain and print only the verdict and the count (no entries);
    /// fails naming the first broken entry.
    #[arg(long, conflicts_with = "archive")]
    verify: bool,
    /// Entries to show: the newest (before `--before`), at most this many and at most 8 MiB
    /// of them.
    #[arg(
        long,
        default_value_t = PAGE,
        conflicts_with_all = ["archive", "verify"],
        value_parser = clap::value_parser!(u64).range(1..=MAX_PAGE)
    )]
    limit: u64,
    /// Show the entries before this sequence number: the older page a listing names.
    #[arg(long, value_name = "SEQ", conflicts_with_all = ["archive", "verify"])]
    before: Option<u64>,
    /// Move the oldest entries out of the store into a file of JSON lines under
    /// `<data-dir>/audit-archive/`, keeping the newest (`--keep`); the store's chain then
    /// starts from a signed base that links to the file's last entry.
    #[arg(long)]
    archive: bool,
    /// With --archive: entries to keep in the store, the newest.
    #[arg(long, default_value_t = DEFAULT_KEEP, requires = "archive", value_parser = clap::value_parser!(u64).range(1..))]
    keep: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Entries `audit --archive` keeps in the store unless told otherwise.
const DEFAULT_KEEP: u64 = 10_000;
/// Entries `audit` shows unless told otherwise.
const PAGE: u64 = mesh_node::integrity::DEFAULT_AUDIT_PAGE as u64;
/// Most entries `audit --limit` may ask for.
const MAX_PAGE: u64 = mesh_node::integrity::MAX_AUDIT_PAGE as u64;

/// The audit log from the daemon or, when no daemon answers (one that refused to start on
/// a rolled-back store, say), read from the data directory. The database's lock keeps the
/// second from ever opening the store of a running node.
async fn audit_view(
    dir: &mesh_node::DataDir,
    query: &mesh_node::integrity::AuditQuery,
) -> anyhow::Result<AuditView> {
    let from_daemon = async {
        let client = Client::for_data_dir(dir)?;
        client
            .get::<AuditView>(&format!("/v1/audit{}", query.to_query_string()))
            .await
    };
    let daemon_error = match from_daemon.await {
        Ok(view) => return Ok(view),
        Err(e) => e,
    };
    if !dir.config().exists() {
        return Err(daemon_error);
    }
    match mesh_node::integrity::offline_audit(dir, query) {
        Ok(view) => {
            eprintln!(
                "note: no daemon answers for `{}`: the audit log was read from disk",
                dir.root().display()
            );
            Ok(view)
        }
        Err(offline) => Err(daemon_error.context(format!(
            "reading the audit log from disk failed too: {offline}"
        ))),
    }
}

pub(crate) async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.dir.data_dir)?;
    if args.archive {
        return archive(&dir, args.keep, args.json).await;
    }
    let query = mesh_node::integrity::AuditQuery {
        limit: (!args.verify).then_some(args.limit as usize),
        before: args.before,
        verify: args.verify,
    };
    let view = audit_view(&dir, &query).await?;
    if args.json {
        output::json(&view)?;
    } else if !args.verify {
        let mut table = output::table(&["seq", "time", "kind", "product", "contract", "detail"]);
        for e in &view.entries {
            let text = |key: &str| e.detail.get(key).and_then(|v| v.as_str()).unwrap_or("");
            let contract = text("agreement").get(..12).unwrap_or("").to_owned();
            let mut extra = Vec::new();
            for key in [
                "role",
                "direction",
                "consumer",
                "decided_by",
                "revoked_by",
                "reason",
                "version",
            ] {
                if let Some(value) = e.detail.get(key).filter(|v| !v.is_null()) {
                    let value = value
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| value.to_string());
                    extra.push(format!("{key}={value}"));
                }
            }
            // Products, domains and reasons in the log came from peers: cleaned per cell.
            table.add_row(output::row([
                e.seq.to_string(),
                e.at.clone(),
                e.kind.clone(),
                text("product").to_owned(),
                contract,
                extra.join(" "),
            ]));
        }
        crate::outln!("{table}");
        if let (Some(before), Some(first)) = (view.next_before, view.entries.first()) {
            eprintln!(
                "note: entries {} to {} of the {} the store keeps; older ones: `meshnode audit --before {before}`",
                first.seq,
                view.entries.last().map_or(first.seq, |e| e.seq),
                view.held_entries
            );
        }
    }
    match (&view.error, args.verify) {
        (Some(error), true) => {
            return Err(fail(
                Failure::Verification,
                format!(
                    "the audit log does not verify: {} (the store of {} keeps {} entries)",
                    clean(error),
                    dir.root().display(),
                    view.held_entries
                ),
            ));
        }
        (None, true) if !args.json => {
            crate::outln!(
                "audit log verified: {} entries, hash chain intact",
                view.intact_entries
            );
        }
        (Some(error), false) if !args.json => {
            eprintln!("warning: {} (run `meshnode audit --verify`)", clean(error));
        }
        _ => {}
    }
    Ok(())
}

/// `audit --archive`: through the daemon, which holds the store.
async fn archive(dir: &mesh_node::DataDir, keep: u64, json: bool) -> anyhow::Result<()> {
    let client = Client::for_data_dir(dir)?;
    let view: ArchiveView = client
        .post("/v1/audit/archive", &ArchiveRequest { keep })
        .await?;
    if json {
        return output::json(&view);
    }
    match &view.archived {
        Some(a) => crate::outln!(
            "archived audit entries {} to {} ({}) to {}; the store keeps the newest {}",
            a.first,
            a.last,
            a.last - a.first + 1,
            a.path.display(),
            a.kept
        ),
        None => {
            crate::outln!("nothing to archive: the audit log holds no more than {keep} entries")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_validity, wanted_columns};

    #[test]
    fn a_column_named_whole_keeps_its_comma() {
        use clap::Parser;

        #[derive(Parser)]
        struct Args {
            #[command(subcommand)]
            action: super::ShareAction,
        }
        let parse = |args: &[&str]| {
            let mut argv = vec!["share", "request", "sales/orders", "--purpose", "p"];
            argv.extend_from_slice(args);
            match Args::try_parse_from(argv).unwrap().action {
                super::ShareAction::Request {
                    columns, column, ..
                } => wanted_columns(columns, column),
                _ => unreachable!(),
            }
        };
        assert_eq!(
            parse(&["--columns", "region,amount", "--column", "Revenue, EUR"]),
            Some(vec![
                "region".into(),
                "amount".into(),
                "Revenue, EUR".into()
            ])
        );
        assert_eq!(
            parse(&["--column", "a,b", "--column", "c"]),
            Some(vec!["a,b".into(), "c".into()])
        );
        assert_eq!(parse(&[]), None);
        assert!(
            Args::try_parse_from([
                "share",
                "request",
                "sales/orders",
                "--purpose",
                "p",
                "--column",
                "x",
                "--all-columns-including-future",
            ])
            .is_err()
        );
    }

    #[test]
    fn validity_durations() {
        assert_eq!(parse_validity("90s"), Ok(90));
        assert_eq!(parse_validity("15m"), Ok(900));
        assert_eq!(parse_validity("12h"), Ok(43_200));
        assert_eq!(parse_validity("7d"), Ok(604_800));
        for bad in ["", "10", "s", "1.5h", "-3s", "3 weeks", "0s"] {
            assert!(parse_validity(bad).is_err(), "{bad}");
        }
    }
}
