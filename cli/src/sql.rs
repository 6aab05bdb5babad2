//! `meshnode sql "SELECT ..."`: a query over the products this node holds usable agreements
//! for, run by the daemon (`POST /v1/sql`), whose answer is an Arrow IPC stream decoded here
//! batch by batch and printed as a table, JSON rows or CSV, or written to a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use mesh_node::dataplane::OutputFormat;
use mesh_node::diskroom::Room;
use mesh_node::views::{SqlRequestBody, SqlTableView};

use crate::DirArg;
use crate::client::{self, Client};
use crate::exit::{Failure, fail};
use crate::output;

/// Rows a terminal table shows at most (the rest is counted; use --csv or --out for all).
const MAX_TABLE_ROWS: usize = 10_000;

/// `meshnode sql`.
#[derive(Debug, clap::Args)]
pub(crate) struct SqlArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The query: one SELECT over the products you hold agreements for, each a table named
    /// by its product in double quotes, e.g. `SELECT count(*) FROM "sales/orders"`.
    #[arg(required_unless_present = "tables")]
    query: Option<String>,
    /// List the tables a query can use (products with a usable agreement) and their
    /// granted columns.
    #[arg(long, conflicts_with_all = ["csv", "out"])]
    tables: bool,
    /// Print the rows as a JSON array of objects. NaN and infinite floats, which JSON has no
    /// number for, are the strings "NaN", "Infinity" and "-Infinity" (null is SQL NULL only).
    #[arg(long, conflicts_with_all = ["csv", "out"])]
    json: bool,
    /// Print the rows as CSV with a header line.
    #[arg(long, conflicts_with = "out")]
    csv: bool,
    /// Write the rows to a file instead: .arrow (Arrow IPC file), .arrows (Arrow IPC
    /// stream) or .parquet, by its extension.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the --out file if it exists (otherwise the query is refused).
    #[arg(long)]
    force: bool,
}

/// Where the rows go.
enum Sink {
    /// A table on standard output.
    Table,
    /// JSON rows on standard output.
    Json,
    /// CSV on standard output.
    Csv,
    /// A file in this format.
    File(PathBuf, OutputFormat),
}

pub(crate) async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let dir = client::data_dir(args.dir.data_dir)?;
    if args.tables {
        let client = Client::for_data_dir(&dir)?;
        return tables(&client, args.json).await;
    }
    let query = args.query.unwrap_or_default();
    let sink = match &args.out {
        Some(out) => {
            let format = OutputFormat::from_extension(out).ok_or_else(|| {
                fail(
                    Failure::Usage,
                    format!(
                        "`--out {}`: name the file .arrow (Arrow IPC file), .arrows (Arrow IPC stream) or .parquet",
                        output::clean(&out.display().to_string())
                    ),
                )
            })?;
            if !args.force && std::fs::symlink_metadata(out).is_ok() {
                return Err(fail(
                    Failure::Usage,
                    format!(
                        "`{}` exists: pass --force to replace it, or choose another --out",
                        output::clean(&out.display().to_string())
                    ),
                ));
            }
            Sink::File(out.clone(), format)
        }
        None if args.json => Sink::Json,
        None if args.csv => Sink::Csv,
        None => Sink::Table,
    };
    let client = Client::for_data_dir(&dir)?;
    let response = client
        .post_for_body("/v1/sql", &SqlRequestBody { query })
        .await
        .context("the query failed")?;
    let mut rows = Rows::new(response);
    match sink {
        Sink::Table => print_table(&mut rows).await,
        Sink::Json => print_json(&mut rows).await,
        Sink::Csv => print_csv(&mut rows).await,
        Sink::File(path, format) => {
            // The node's disk reserve holds for what the query writes too (its default when
            // the config cannot be read: the node then is not running either).
            let reserve = mesh_node::NodeConfig::load(&dir.config())
                .map(|c| c.disk_reserve())
                .unwrap_or_default();
            let room = Room::keeping(reserve);
            write_file(&mut rows, &path, format, args.force, room).await
        }
    }
}

/// `meshnode sql --tables`.
async fn tables(client: &Client, json: bool) -> anyhow::Result<()> {
    let tables: Vec<SqlTableView> = client.get("/v1/sql/tables").await?;
    if json {
        return output::json(&tables);
    }
    if tables.is_empty() {
        crate::outln!(
            "no tables: this node holds no usable agreement (request one with `meshnode share request`)"
        );
        return Ok(());
    }
    let mut table = output::table(&["table", "version", "agreement", "columns"]);
    for t in &tables {
        let columns: Vec<String> = t
            .columns
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        table.add_row(output::row([
            format!("\"{}\"", t.name),
            t.version.to_string(),
            t.agreement.chars().take(12).collect(),
            columns.join(", "),
        ]));
    }
    crate::outln!("{table}");
    Ok(())
}

/// The record batches of the daemon's answer, decoded as they arrive.
struct Rows {
    /// The answer's body.
    response: reqwest::Response,
    /// The IPC stream decoder.
    decoder: StreamDecoder,
    /// Bytes received but not decoded yet.
    pending: Buffer,
    /// The end of the body was reached.
    done: bool,
}

impl Rows {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            decoder: StreamDecoder::new(),
            pending: Buffer::from(Vec::<u8>::new()),
            done: false,
        }
    }

    /// The next batch, `None` at the end of a complete stream.
    async fn next(&mut self) -> anyhow::Result<Option<RecordBatch>> {
        loop {
            while !self.pending.is_empty() {
                if let Some(batch) = self.decoder.decode(&mut self.pending).map_err(bad)? {
                    return Ok(Some(batch));
                }
            }
            if self.done {
                return Ok(None);
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.pending = Buffer::from(chunk.to_vec()),
                Ok(None) => {
                    self.done = true;
                    self.decoder.finish().map_err(|_| {
                        fail(
                            Failure::Unreachable,
                            "the daemon's answer broke off before the end of the results: the query failed while running (see the daemon's log); what was printed is incomplete",
                        )
                    })?;
                }
                Err(e) => {
                    return Err(fail(
                        Failure::Unreachable,
                        format!(
                            "the daemon's answer broke off ({e}): the query failed while running; what was printed is incomplete"
                        ),
                    ));
                }
            }
        }
    }

    /// The schema, once the stream's first message was decoded.
    async fn schema(&mut self) -> anyhow::Result<(SchemaRef, Option<RecordBatch>)> {
        let first = self.next().await?;
        let schema = match (&first, self.decoder.schema()) {
            (Some(b), _) => b.schema(),
            (None, Some(s)) => s,
            (None, None) => {
                return Err(fail(
                    Failure::Other,
                    "the daemon's answer holds no Arrow IPC stream",
                ));
            }
        };
        Ok((schema, first))
    }
}

fn bad(e: arrow::error::ArrowError) -> anyhow::Error {
    fail(
        Failure::Other,
        format!("the daemon's answer is not a valid Arrow IPC stream: {e}"),
    )
}

/// A result this command received whole but cannot write as `what` (a union or a map
/// column as JSON, say).
fn unwritable(what: &'static str) -> impl Fn(arrow::error::ArrowError) -> anyhow::Error {
    move |e| {
        fail(
            Failure::Other,
            format!(
                "cannot write the result as {what}: {e}; select other columns, or write it \
                 with --out as .arrow, .arrows or .parquet"
            ),
        )
    }
}

/// Standard output, buffered; a reader that went away ends the process as `outln!` does.
struct Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>);

impl Stdout {
    fn new() -> Self {
        Self(std::io::BufWriter::new(std::io::stdout().lock()))
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.write(buf) {
            Ok(n) => Ok(n),
            Err(e) => output::stdout_failed(&e),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.flush() {
            Ok(()) => Ok(()),
            Err(e) => output::stdout_failed(&e),
        }
    }
}

async fn print_table(rows: &mut Rows) -> anyhow::Result<()> {
    let (schema, mut batch) = rows.schema().await?;
    // Column names come from other domains' descriptors and CSV headers, as values do.
    let header = output::row(schema.fields().iter().map(|f| f.name()));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = output::table(&header);
    let options = FormatOptions::default().with_null("NULL");
    let (mut shown, mut total) = (0usize, 0usize);
    while let Some(b) = batch {
        total += b.num_rows();
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unwritable("a table"))?;
        for row in 0..b.num_rows() {
            if shown == MAX_TABLE_ROWS {
                break;
            }
            // Values come from other domains: `row` escapes what a terminal would obey.
            table.add_row(output::row(
                formatters.iter().map(|f| f.value(row).to_string()),
            ));
            shown += 1;
        }
        batch = rows.next().await?;
    }
    crate::outln!("{table}");
    let more = if shown < total {
        format!(" ({} shown: use --csv or --out for all)", shown)
    } else {
        String::new()
    };
    crate::outln!("{total} row{}{more}", if total == 1 { "" } else { "s" });
    Ok(())
}

async fn print_json(rows: &mut Rows) -> anyhow::Result<()> {
    let (_, mut batch) = rows.schema().await?;
    let mut writer = crate::jsonout::json_writer(Stdout::new());
    while let Some(b) = batch {
        writer.write(&b).map_err(unwritable("JSON"))?;
        batch = rows.next().await?;
    }
    writer.finish().map_err(unwritable("JSON"))?;
    let mut out = writer.into_inner();
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// `--csv`: NULL as an empty field, an empty text as `""` (see `csvout`).
async fn print_csv(rows: &mut Rows) -> anyhow::Result<()> {
    let (schema, mut batch) = rows.schema().await?;
    let mut writer = crate::csvout::CsvWriter::new(Stdout::new());
    writer.header(&schema)?;
    while let Some(b) = batch {
        writer.write(&b).map_err(unwritable("CSV"))?;
        batch = rows.next().await?;
    }
    writer.into_inner()?;
    Ok(())
}

/// Added to what each batch written to `--out` asks room for: the writer's buffer and the
/// file's footer.
const WRITE_MARGIN: u64 = 1 << 20;

/// The writer of the format `--out` chose.
enum FileSink {
    /// With the schema written: types Parquet has no name for replaced
    /// (`dataplane::parquet_schema`), as a fetch writes them.
    Parquet(parquet::arrow::ArrowWriter<std::fs::File>, SchemaRef),
    Stream(arrow::ipc::writer::StreamWriter<std::io::BufWriter<std::fs::File>>),
    File(arrow::ipc::writer::FileWriter<std::io::BufWriter<std::fs::File>>),
}

impl FileSink {
    fn new(format: OutputFormat, file: std::fs::File, schema: &SchemaRef) -> anyhow::Result<Self> {
        // The Parquet writer buffers on its own.
        if format == OutputFormat::Parquet {
            // The parquet crate panics on a union rather than refuse it.
            if let Some(column) = mesh_node::dataplane::parquet_unwritable(schema) {
                anyhow::bail!(
                    "cannot write Parquet: column `{column}` is a union, which Parquet cannot \
                     hold; write the result as .arrow or .arrows, or select the union's \
                     members as columns of their own"
                );
            }
            let schema = mesh_node::dataplane::parquet_schema(schema);
            return Ok(Self::Parquet(
                parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)
                    .context("cannot write Parquet")?,
                schema,
            ));
        }
        let file = std::io::BufWriter::new(file);
        Ok(match format {
            OutputFormat::Arrows => {
                Self::Stream(arrow::ipc::writer::StreamWriter::try_new(file, schema).map_err(bad)?)
            }
            _ => Self::File(arrow::ipc::writer::FileWriter::try_new(file, schema).map_err(bad)?),
        })
    }

    /// Bytes the writer holds that will still reach the file: the Parquet row group in
    /// progress (the IPC writers write each batch through a small buffer).
    fn pending(&self) -> u64 {
        match self {
            Self::Parquet(w, _) => w.in_progress_size() as u64,
            Self::Stream(_) | Self::File(_) => 0,
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        match self {
            Self::Parquet(w, schema) => {
                let batch = mesh_node::dataplane::cast_to_schema(batch.clone(), schema)
                    .context("cannot write Parquet")?;
                w.write(&batch).context("cannot write Parquet")
            }
            Self::Stream(w) => w.write(batch).map_err(bad),
            Self::File(w) => w.write(batch).map_err(bad),
        }
    }

    /// Ends the format and forces the file to disk.
    fn finish(self) -> anyhow::Result<()> {
        let file = match self {
            Self::Parquet(w, _) => w.into_inner().context("cannot write Parquet")?,
            Self::Stream(mut w) => {
                w.finish().map_err(bad)?;
                w.into_inner()
                    .map_err(bad)?
                    .into_inner()
                    .map_err(|e| e.into_error())?
            }
            Self::File(mut w) => {
                w.finish().map_err(bad)?;
                w.into_inner()
                    .map_err(bad)?
                    .into_inner()
                    .map_err(|e| e.into_error())?
            }
        };
        file.sync_all()?;
        Ok(())
    }
}

/// Writes the rows to a fresh file of their own beside `out` (created exclusively, never a
/// fetch's resumable `OUT.partial`, never through a link), then moves it to `out`: a file
/// appears only complete, and replaces one that appeared meanwhile only with `force`. Stops,
/// leaving nothing, before a batch would eat into the disk reserve `room` keeps.
async fn write_file(
    rows: &mut Rows,
    out: &Path,
    format: OutputFormat,
    force: bool,
    room: Room,
) -> anyhow::Result<()> {
    let (schema, mut batch) = rows.schema().await?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Removed when dropped: on every error below, nothing is left behind.
    let staged = tempfile::Builder::new()
        .prefix(".meshnode-sql-")
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in `{}`", dir.display()))?;
    let file = staged.as_file().try_clone()?;
    let mut sink = FileSink::new(format, file, &schema)?;
    let mut count = 0u64;
    while let Some(b) = batch {
        // The batch at its decoded size, which an encoding seldom exceeds, what the writer
        // holds, and a margin for its buffer and the file's footer.
        let step = sink.pending() + b.get_array_memory_size() as u64 + WRITE_MARGIN;
        room.check(staged.path(), step).map_err(|no_room| {
            fail(
                Failure::Io,
                format!(
                    "{no_room}; nothing was written to `{}`",
                    output::clean(&out.display().to_string())
                ),
            )
        })?;
        count += b.num_rows() as u64;
        sink.write(&b)?;
        batch = rows.next().await?;
    }
    sink.finish()?;
    let placed = if force {
        staged.persist(out)
    } else {
        staged.persist_noclobber(out)
    };
    placed.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            fail(
                Failure::Usage,
                format!(
                    "`{}` appeared while the query ran: pass --force to replace it, or choose another --out",
                    output::clean(&out.display().to_string())
                ),
            )
        } else {
            anyhow::Error::new(e.error)
                .context(format!("cannot move the result to `{}`", out.display()))
        }
    })?;
    crate::outln!(
        "wrote {count} row{} to {} ({format})",
        if count == 1 { "" } else { "s" },
        output::clean(&out.display().to_string())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema, UnionFields, UnionMode};

    use super::*;

    #[test]
    fn a_union_column_is_refused_as_parquet_by_name_and_kept_as_arrow() {
        let union = DataType::Union(
            UnionFields::try_new(
                [0, 1],
                [
                    Field::new("i", DataType::Int32, true),
                    Field::new("s", DataType::Utf8, true),
                ],
            )
            .unwrap(),
            UnionMode::Dense,
        );
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("u", union, true),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let file = || std::fs::File::create(dir.path().join("out")).unwrap();
        let error = FileSink::new(OutputFormat::Parquet, file(), &schema)
            .err()
            .expect("a union is refused as Parquet");
        let message = format!("{error:#}");
        assert!(message.contains("column `u` is a union"), "{message}");
        assert!(FileSink::new(OutputFormat::Arrows, file(), &schema).is_ok());
    }
}
