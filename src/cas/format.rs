//! What kind of data an object is: its format name (the `<fmt>` of `data.<fmt>`) and, for the
//! formats that carry one, the facts worth finding without downloading the data: the schema,
//! row and row-group counts of Parquet and Arrow files, the header of a CSV file.
//!
//! The format is detected from the content where it has a signature, otherwise taken from the
//! first name's extension, otherwise `bin`. A signature names a family and an extension may
//! refine it: a zip file named `model.pt` is a `pt`, a zip named `data.zip` a `zip`. Format
//! names become part of store keys, so a [`Format`] is always 1 to 16 lowercase ASCII letters
//! or digits. Reading facts never fails the store: a file that claims a format but does not
//! parse as it simply has no facts.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::ids::Format;

/// Content signatures: (offset, magic bytes, format, extensions that refine it).
const SIGNATURES: &[(usize, &[u8], &str, &[&str])] = &[
    (0, b"PAR1", "parquet", &[]),
    (0, b"ARROW1", "arrow", &["feather", "arrow"]),
    (0, b"\x93NUMPY", "npy", &[]),
    (
        0,
        b"PK\x03\x04",
        "zip",
        &["npz", "pt", "pth", "whl", "jar", "docx", "xlsx", "keras"],
    ),
    (0, b"PK\x05\x06", "zip", &["npz", "pt", "pth"]),
    (0, b"\x1f\x8b", "gz", &["tgz"]),
    (0, b"\x28\xb5\x2f\xfd", "zst", &[]),
    (0, b"BZh", "bz2", &[]),
    (0, b"\xfd7zXZ\x00", "xz", &[]),
    (0, b"\x89HDF\r\n\x1a\n", "h5", &["hdf5", "h5ad", "nc"]),
    (0, b"ORC", "orc", &[]),
    (0, b"Obj\x01", "avro", &[]),
    (0, b"\x89PNG\r\n\x1a\n", "png", &[]),
    (0, b"\xff\xd8\xff", "jpg", &["jpeg"]),
    (0, b"GGUF", "gguf", &[]),
    (0, b"\x7fELF", "elf", &["so"]),
    (257, b"ustar", "tar", &[]),
];

/// The lowercase extension of `name`, if it is a valid format name.
fn extension(name: &str) -> Option<Format> {
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    Format::parse(&ext.to_ascii_lowercase()).ok()
}

/// Detects the format from the first bytes (`head`, at least 512 if the file has them), the
/// last four bytes (`tail`) and the name the data first arrived under.
pub fn detect(head: &[u8], tail: &[u8], name: Option<&str>) -> Format {
    let ext = name.and_then(extension);
    for (offset, magic, format, refinements) in SIGNATURES {
        if head.get(*offset..offset + magic.len()) == Some(magic) {
            // Parquet also ends with its magic; a file that only starts with it is not Parquet.
            if *format == "parquet" && tail != b"PAR1" {
                continue;
            }
            return match &ext {
                Some(e) if refinements.contains(&e.as_str()) => e.clone(),
                _ => Format::known(format),
            };
        }
    }
    if is_safetensors(head) {
        return Format::known("safetensors");
    }
    ext.unwrap_or_else(|| Format::known("bin"))
}

/// safetensors: an 8-byte little-endian header length, then a JSON object.
fn is_safetensors(head: &[u8]) -> bool {
    head.len() > 9
        && head[8] == b'{'
        && u64::from_le_bytes(head[..8].try_into().unwrap_or_default()) < 100 * 1024 * 1024
        && head[9..]
            .iter()
            .take(2)
            .all(|&b| b == b'"' || b.is_ascii_whitespace())
}

/// Reads the head and tail of a file for [`detect`].
pub fn detect_file(path: &Path, name: Option<&str>) -> std::io::Result<Format> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = vec![0u8; 512.min(len) as usize];
    f.read_exact(&mut head)?;
    let mut tail = [0u8; 4];
    let tail = if len >= 8 {
        f.seek(SeekFrom::End(-4))?;
        f.read_exact(&mut tail)?;
        &tail[..]
    } else {
        &[][..]
    };
    Ok(detect(&head, tail, name))
}

/// One column of a schema, with its Arrow type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

/// Facts about the content that a reader of `metadata.json` can use without the data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<Field>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_rows: Option<u64>,
    /// Parquet row groups; for Arrow IPC files, record batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_row_groups: Option<u64>,
    /// The header row of a CSV or TSV file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

/// Reads the facts of a file of `format`; a file that does not parse has none.
pub fn facts(path: &Path, format: &Format) -> Facts {
    let read = match format.as_str() {
        "parquet" => parquet_facts(path),
        "arrow" | "feather" => arrow_facts(path),
        "csv" => csv_facts(path, b','),
        "tsv" => csv_facts(path, b'\t'),
        _ => return Facts::default(),
    };
    match read {
        Ok(f) => f,
        Err(reason) => {
            tracing::warn!(path = %path.display(), %format, %reason, "could not read format facts");
            Facts::default()
        }
    }
}

fn schema_fields(schema: &arrow_schema::Schema) -> Vec<Field> {
    schema
        .fields()
        .iter()
        .map(|f| Field {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

fn parquet_facts(path: &Path) -> Result<Facts, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| e.to_string())?;
    let fm = meta.file_metadata();
    let schema =
        parquet::arrow::parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata())
            .map_err(|e| e.to_string())?;
    Ok(Facts {
        schema: Some(schema_fields(&schema)),
        num_rows: Some(fm.num_rows().max(0) as u64),
        num_row_groups: Some(meta.num_row_groups() as u64),
        columns: None,
    })
}

/// Arrow IPC file: the footer (read from the end) holds the schema and the record batch
/// blocks; each batch's row count is in its message header, so no data is decoded.
fn arrow_facts(path: &Path) -> Result<Facts, String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < 10 + 8 {
        return Err("too short for an Arrow IPC file".into());
    }
    let mut trailer = [0u8; 10];
    f.seek(SeekFrom::End(-10)).map_err(|e| e.to_string())?;
    f.read_exact(&mut trailer).map_err(|e| e.to_string())?;
    let footer_len = arrow_ipc::reader::read_footer_length(trailer).map_err(|e| e.to_string())?;
    if footer_len as u64 + 10 > len {
        return Err("footer longer than the file".into());
    }
    let mut footer_buf = vec![0u8; footer_len];
    f.seek(SeekFrom::End(-10 - footer_len as i64))
        .map_err(|e| e.to_string())?;
    f.read_exact(&mut footer_buf).map_err(|e| e.to_string())?;
    let footer = arrow_ipc::root_as_footer(&footer_buf).map_err(|e| e.to_string())?;
    let fb_schema = footer.schema().ok_or("no schema in the footer")?;
    let schema = arrow_ipc::convert::try_fb_to_schema(fb_schema).map_err(|e| e.to_string())?;
    let blocks: Vec<(i64, i32)> = footer
        .recordBatches()
        .map(|b| b.iter().map(|b| (b.offset(), b.metaDataLength())).collect())
        .unwrap_or_default();
    let mut rows = 0u64;
    for (offset, meta_len) in &blocks {
        if *offset < 0 || *meta_len < 8 || *offset as u64 + *meta_len as u64 > len {
            return Err("record batch block outside the file".into());
        }
        let mut buf = vec![0u8; *meta_len as usize];
        f.seek(SeekFrom::Start(*offset as u64))
            .map_err(|e| e.to_string())?;
        f.read_exact(&mut buf).map_err(|e| e.to_string())?;
        // Current files prefix the message with 0xFFFFFFFF and a length; old ones with a length.
        let skip = if buf[..4] == [0xff; 4] { 8 } else { 4 };
        let msg = arrow_ipc::root_as_message(&buf[skip..]).map_err(|e| e.to_string())?;
        let batch = msg
            .header_as_record_batch()
            .ok_or("block is not a record batch")?;
        rows += batch.length().max(0) as u64;
    }
    Ok(Facts {
        schema: Some(schema_fields(&schema)),
        num_rows: Some(rows),
        num_row_groups: Some(blocks.len() as u64),
        columns: None,
    })
}

fn csv_facts(path: &Path, delimiter: u8) -> Result<Facts, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(file.take(1024 * 1024));
    let mut record = csv::StringRecord::new();
    if !reader.read_record(&mut record).map_err(|e| e.to_string())? {
        return Ok(Facts::default());
    }
    Ok(Facts {
        columns: Some(record.iter().map(str::to_string).collect()),
        ..Facts::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_win_over_extensions() {
        assert_eq!(
            detect(b"PAR1xxxx", b"PAR1", Some("t.csv")).as_str(),
            "parquet"
        );
        assert_eq!(detect(b"PAR1xxxx", b"nope", Some("t.csv")).as_str(), "csv");
        assert_eq!(detect(b"\x93NUMPY\x01\x00", b"", None).as_str(), "npy");
        assert_eq!(
            detect(b"PK\x03\x04....", b"", Some("model.pt")).as_str(),
            "pt"
        );
        assert_eq!(
            detect(b"PK\x03\x04....", b"", Some("x.txt")).as_str(),
            "zip"
        );
        assert_eq!(
            detect(b"\x1f\x8b\x08", b"", Some("a.tar.gz")).as_str(),
            "gz"
        );
    }

    #[test]
    fn extension_then_bin() {
        assert_eq!(
            detect(b"a,b\n1,2\n", b"", Some("train.CSV")).as_str(),
            "csv"
        );
        assert_eq!(detect(b"hello", b"", Some("README")).as_str(), "bin");
        assert_eq!(detect(b"hello", b"", Some(".bashrc")).as_str(), "bin");
        assert_eq!(detect(b"hello", b"", Some("x.we!rd")).as_str(), "bin");
        assert_eq!(detect(b"hello", b"", None).as_str(), "bin");
    }

    #[test]
    fn format_names_are_key_safe() {
        assert!(Format::parse("parquet").is_ok());
        for bad in ["", "PARQUET", "a/b", "..", "a.b", "x".repeat(17).as_str()] {
            assert!(Format::parse(bad).is_err(), "{bad:?}");
        }
    }
}
