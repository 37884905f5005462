//! Tables as stored bytes: a table, handed over as an Arrow IPC stream (which pyarrow, pandas
//! through pyarrow, and polars all write), becomes Parquet with fixed writer options, so that
//! the same table gives the same bytes, and so the same hash, in every process on every node
//! (docs/PYTHON.md, "Tables").
//!
//! What is fixed: Snappy compression, Parquet 1.0 pages, dictionary encoding, page statistics,
//! row groups of [`ROW_GROUP_ROWS`], and `created_by` [`CREATED_BY`] instead of a library
//! version. The input's batches are joined first, so the way a caller happened to chunk the
//! table (pandas and polars chunk the same data differently) does not move a page boundary.

use std::io::Write;

use arrow_ipc::reader::StreamReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};

use crate::error::{Error, Result};

/// Rows in a row group (the last one holds the rest).
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// What the Parquet footer names as its writer.
pub const CREATED_BY: &str = "mltrack";

fn bad(what: &str) -> impl FnOnce(arrow_schema::ArrowError) -> Error + '_ {
    move |e| Error::BadRequest(format!("{what}: {e}"))
}

/// Writes the table in the Arrow IPC stream `ipc` to `out` as Parquet with the fixed options.
pub fn parquet_from_ipc(ipc: &[u8], out: impl Write + Send) -> Result<()> {
    let reader =
        StreamReader::try_new(ipc, None).map_err(bad("the table is not an Arrow IPC stream"))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(bad("the table's Arrow IPC stream is damaged"))?;
    let table = arrow_select::concat::concat_batches(&schema, &batches)
        .map_err(bad("the table's batches do not agree"))?;
    drop(batches);
    let props = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(CREATED_BY.to_string())
        .build();
    let failed = |e: parquet::errors::ParquetError| Error::Failed(format!("writing Parquet: {e}"));
    let mut writer = ArrowWriter::try_new(out, schema, Some(props)).map_err(failed)?;
    writer.write(&table).map_err(failed)?;
    // Finished, then flushed here: a buffered `out` that failed to write must not pass.
    let mut out = writer.into_inner().map_err(failed)?;
    out.flush().map_err(Error::io("the Parquet output"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow_ipc::writer::StreamWriter;

    use super::*;

    fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        out
    }

    #[test]
    fn the_same_table_chunked_differently_gives_the_same_bytes() {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10_000));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..10_000).map(|i| format!("row {}", i % 97)),
        ));
        let whole = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
        let parts = [
            whole.slice(0, 3),
            whole.slice(3, 6000),
            whole.slice(6003, 3997),
        ];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        parquet_from_ipc(&ipc(std::slice::from_ref(&whole)), &mut a).unwrap();
        parquet_from_ipc(&ipc(&parts), &mut b).unwrap();
        assert!(a == b, "same table, different bytes");
        assert_eq!(&a[..4], b"PAR1");
        assert_eq!(
            crate::cas::format::detect(&a, &a[a.len() - 4..], None).as_str(),
            "parquet"
        );
    }

    #[test]
    fn bytes_that_are_not_a_table_are_refused() {
        let err = parquet_from_ipc(b"not arrow", Vec::new()).unwrap_err();
        assert!(err.to_string().contains("not an Arrow IPC stream"), "{err}");
    }
}
