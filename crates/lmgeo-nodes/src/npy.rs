//! Reading 2-D `.npy` files (numpy's own format), so a researcher can feed a
//! matrix saved from Python straight into an experiment.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
}

/// A matrix read from a `.npy` file, converted to `f32`, row-major.
#[derive(Debug, PartialEq)]
pub struct NpyMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

pub fn read_npy(path: &Path) -> Result<NpyMatrix, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_npy(&bytes).map_err(|message| NpyError::Format {
        path: path.display().to_string(),
        message,
    })
}

fn header_field<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let needle = format!("'{key}':");
    let start = header
        .find(&needle)
        .ok_or_else(|| format!("header has no `{key}`"))?
        + needle.len();
    Ok(header[start..].trim_start())
}

pub fn parse_npy(bytes: &[u8]) -> Result<NpyMatrix, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let data_start = header_start + header_len;
    let header = std::str::from_utf8(
        bytes
            .get(header_start..data_start)
            .ok_or("truncated header")?,
    )
    .map_err(|_| "header is not text")?;
    let descr = header_field(header, "descr")?;
    let descr = descr
        .trim_start_matches(['\'', '"'])
        .split(['\'', '"'])
        .next()
        .unwrap_or_default();
    let fortran = header_field(header, "fortran_order")?.starts_with("True");
    let shape_text = header_field(header, "shape")?;
    let shape_text = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("shape is not a tuple")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension `{s}`"))
        })
        .collect::<Result<_, _>>()?;
    let (rows, cols) = match shape.as_slice() {
        [r, c] => (*r, *c),
        [n] => (1, *n),
        other => return Err(format!("expected a 2-D array, found shape {other:?}")),
    };
    let body = &bytes[data_start..];
    let count = rows * cols;
    let values: Vec<f32> = match descr {
        "<f4" => {
            check_len(body, count * 4)?;
            body.chunks_exact(4)
                .take(count)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        "<f8" => {
            check_len(body, count * 8)?;
            body.chunks_exact(8)
                .take(count)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect()
        }
        other => {
            return Err(format!(
                "unsupported dtype `{other}`; save as float32 or float64"
            ));
        }
    };
    let data = if fortran {
        let mut out = vec![0.0; count];
        for r in 0..rows {
            for c in 0..cols {
                out[r * cols + c] = values[c * rows + r];
            }
        }
        out
    } else {
        values
    };
    Ok(NpyMatrix { rows, cols, data })
}

fn check_len(body: &[u8], needed: usize) -> Result<(), String> {
    if body.len() < needed {
        Err(format!(
            "data is truncated: {} bytes where {needed} are needed",
            body.len()
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a version-1 file the way the format specification describes.
    fn npy(descr: &str, fortran: bool, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn reads_c_and_fortran_order() {
        let values: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let body: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let c = parse_npy(&npy("<f4", false, "(2, 3)", &body)).unwrap();
        assert_eq!((c.rows, c.cols), (2, 3));
        assert_eq!(c.data, values);
        let f = parse_npy(&npy("<f4", true, "(2, 3)", &body)).unwrap();
        // Column-major [[1, 3, 5], [2, 4, 6]].
        assert_eq!(f.data, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn reads_float64_and_rejects_others() {
        let body: Vec<u8> = [0.5f64, -1.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let m = parse_npy(&npy("<f8", false, "(2,)", &body)).unwrap();
        assert_eq!((m.rows, m.cols, m.data.clone()), (1, 2, vec![0.5, -1.5]));
        let err = parse_npy(&npy("<i8", false, "(2,)", &body)).unwrap_err();
        assert!(err.contains("unsupported dtype `<i8`"), "{err}");
        let err = parse_npy(&npy("<f8", false, "(3,)", &body)).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(parse_npy(b"PK\x03\x04").unwrap_err().contains("bad magic"));
    }
}
