//! TensorBoard's event-file format: TFRecord framing around `tensorflow.Event` protos.
//!
//! A record is `u64 length (little-endian) | u32 masked_crc32c(length bytes) | data |
//! u32 masked_crc32c(data)`, with `masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8`
//! (wrapping), as in TensorFlow's `tensorflow/core/lib/io/record_writer.cc`. The first
//! record of a file is an `Event` with `file_version = "brain.Event:2"`; every later one
//! carries a `Summary` of scalar values (`simple_value`).
//!
//! The protos are the subset of `tensorflow/core/util/event.proto` and
//! `tensorflow/core/framework/summary.proto` needed for scalars, as `prost` derive structs
//! (no `protoc`): field numbers are TensorFlow's, so TensorBoard reads the files and this
//! reader skips the fields it does not know. [`read_records`] and [`read_scalars`] read
//! files back, checking both CRCs of every record.

use std::io::Write;
use std::path::Path;

use gradguard_core::ReportError;
use prost::Message;

/// `tensorflow.Event` (the fields gradguard writes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TfEvent {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "TfEventWhat", tags = "3, 5")]
    pub what: Option<TfEventWhat>,
}

/// The `what` oneof of `tensorflow.Event`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TfEventWhat {
    /// `file_version`, e.g. `brain.Event:2`.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// A summary of values.
    #[prost(message, tag = "5")]
    Summary(TfSummary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TfSummary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<TfSummaryValue>,
}

/// `tensorflow.Summary.Value` (scalars only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TfSummaryValue {
    /// The tag, e.g. `grad_norm/global`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// `simple_value` (field 2 of the `value` oneof).
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// TensorFlow's CRC mask.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Writes one record with its framing.
pub fn write_record(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc32c(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// Encodes `event` and writes it as one record.
pub fn write_event(out: &mut impl Write, event: &TfEvent) -> std::io::Result<()> {
    write_record(out, &event.encode_to_vec())
}

fn take<'a>(
    bytes: &'a [u8],
    at: &mut usize,
    n: usize,
    path: &Path,
    what: &str,
) -> Result<&'a [u8], ReportError> {
    let end = at
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            ReportError::Other(format!(
                "{}: truncated record at byte {}: {what} needs {n} bytes, {} left",
                path.display(),
                *at,
                bytes.len() - *at
            ))
        })?;
    let s = &bytes[*at..end];
    *at = end;
    Ok(s)
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Splits a TFRecord file into its records, checking both CRCs of each.
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>, ReportError> {
    let bytes = std::fs::read(path).map_err(|e| ReportError::io(path, e))?;
    let mut at = 0usize;
    let mut out = Vec::new();
    while at < bytes.len() {
        let start = at;
        let len_bytes = take(&bytes, &mut at, 8, path, "the length")?;
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
        let len_crc = le_u32(take(&bytes, &mut at, 4, path, "the length CRC")?);
        if len_crc != masked_crc32c(len_bytes) {
            return Err(ReportError::Other(format!(
                "{}: record at byte {start}: length CRC mismatch",
                path.display()
            )));
        }
        let len = usize::try_from(len).map_err(|_| {
            ReportError::Other(format!(
                "{}: record at byte {start}: length {len} too large",
                path.display()
            ))
        })?;
        let data = take(&bytes, &mut at, len, path, "the data")?;
        let data_crc = le_u32(take(&bytes, &mut at, 4, path, "the data CRC")?);
        if data_crc != masked_crc32c(data) {
            return Err(ReportError::Other(format!(
                "{}: record at byte {start}: data CRC mismatch",
                path.display()
            )));
        }
        out.push(data.to_vec());
    }
    Ok(out)
}

/// Reads every event of a TensorBoard event file (CRCs checked).
pub fn read_events(path: &Path) -> Result<Vec<TfEvent>, ReportError> {
    read_records(path)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            TfEvent::decode(r.as_slice()).map_err(|e| {
                ReportError::Other(format!(
                    "{}: record {i}: not a tensorflow.Event: {e}",
                    path.display()
                ))
            })
        })
        .collect()
}

/// One scalar as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The tag.
    pub tag: String,
    /// The step.
    pub step: i64,
    /// The value.
    pub value: f32,
}

/// Every scalar of an event file, in file order.
pub fn read_scalars(path: &Path) -> Result<Vec<Scalar>, ReportError> {
    let mut out = Vec::new();
    for e in read_events(path)? {
        if let Some(TfEventWhat::Summary(s)) = e.what {
            for v in s.value {
                if let Some(value) = v.simple_value {
                    out.push(Scalar {
                        tag: v.tag,
                        step: e.step,
                        value,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // crc32c("123456789") = 0xE3069283 (the CRC-32C check value); masked by hand:
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) = 0x2507C60D; + 0xa282ead8 = 0xC78AB0E5 (mod 2^32).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let rot = 0xE306_9283u32.rotate_right(15);
        assert_eq!(rot, 0x2507_C60D);
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn version_record_bytes_are_tensorflows() {
        // Event{file_version: "brain.Event:2"} encodes as field 3, length-delimited, 13 bytes.
        let e = TfEvent {
            wall_time: 0.0,
            step: 0,
            what: Some(TfEventWhat::FileVersion("brain.Event:2".into())),
        };
        let bytes = e.encode_to_vec();
        assert_eq!(bytes[0], 0x1a);
        assert_eq!(bytes[1], 13);
        assert_eq!(&bytes[2..], b"brain.Event:2");
        let mut rec = Vec::new();
        write_event(&mut rec, &e).unwrap();
        assert_eq!(rec.len(), 8 + 4 + 15 + 4);
        assert_eq!(&rec[..8], &15u64.to_le_bytes());
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("events.out.tfevents.1.test");
        let mut rec = Vec::new();
        let summary = TfSummary {
            value: vec![TfSummaryValue {
                tag: "loss".into(),
                simple_value: Some(0.5),
            }],
        };
        write_event(
            &mut rec,
            &TfEvent {
                wall_time: 1.0,
                step: 3,
                what: Some(TfEventWhat::Summary(summary)),
            },
        )
        .unwrap();
        std::fs::write(&p, &rec).unwrap();
        assert_eq!(
            read_scalars(&p).unwrap(),
            vec![Scalar {
                tag: "loss".into(),
                step: 3,
                value: 0.5
            }]
        );
        let mut bad = rec.clone();
        bad[14] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(read_records(&p)
            .unwrap_err()
            .to_string()
            .contains("data CRC mismatch"));
        let mut bad = rec.clone();
        bad[0] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(read_records(&p)
            .unwrap_err()
            .to_string()
            .contains("length CRC mismatch"));
        std::fs::write(&p, &rec[..rec.len() - 2]).unwrap();
        let err = read_records(&p).unwrap_err().to_string();
        assert!(
            err.contains("truncated record at byte") && err.contains("tfevents.1.test"),
            "{err}"
        );
    }
}
