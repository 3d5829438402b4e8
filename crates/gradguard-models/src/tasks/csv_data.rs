//! CSV readers. Every error names the file and, where it applies, the line (1-based, the
//! header is line 1) and the column.

use std::io::Read;
use std::path::Path;

use super::{split, Targets, TaskData};
use crate::error::ModelError;
use crate::rng::Rng64;
use crate::spec::{CsvSeriesTask, CsvTask};

/// A numeric table read from CSV: the chosen columns, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvTable {
    /// The column names, in the order of `values`' columns.
    pub columns: Vec<String>,
    /// Number of data rows.
    pub rows: usize,
    /// `rows × columns.len()` values.
    pub values: Vec<f32>,
}

fn open(path: &Path) -> Result<(Vec<String>, csv::Reader<std::fs::File>), ModelError> {
    let file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // A device or directory is no table (`/dev/zero` would be read forever).
    let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !is_file {
        return Err(ModelError::data(
            path,
            "not a regular file: expected a CSV table with a header row",
        ));
    }
    open_reader(file, path)
}

/// The header of a CSV table read from `reader` (`path` names it in errors), checked (not
/// empty, no repeated name), and the reader positioned on the first data row.
fn open_reader<R: Read>(
    reader: R,
    path: &Path,
) -> Result<(Vec<String>, csv::Reader<R>), ModelError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let header = rdr
        .headers()
        .map_err(|e| ModelError::data(path, format!("line 1 (header): {e}")))?
        .iter()
        .map(|s| s.trim().to_string())
        .collect::<Vec<_>>();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(ModelError::data(
            path,
            "the file is empty: expected a header row and at least one data row",
        ));
    }
    // A repeated name would silently read the first of the columns twice. One hash lookup per
    // column: a header of thousands of columns is checked in linear time.
    let mut first_of: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(header.len());
    for (j, name) in header.iter().enumerate() {
        if let Some(&i) = first_of.get(name.as_str()) {
            return Err(ModelError::data(
                path,
                format!(
                    "line 1 (header): columns {} and {} are both named `{name}`: column names must be unique",
                    i + 1,
                    j + 1
                ),
            ));
        }
        first_of.insert(name, j);
    }
    Ok((header, rdr))
}

fn column_index(path: &Path, header: &[String], name: &str) -> Result<usize, ModelError> {
    header.iter().position(|h| h == name).ok_or_else(|| {
        ModelError::data(
            path,
            format!(
                "line 1 (header): no column `{name}` (the columns are: {})",
                header.join(", ")
            ),
        )
    })
}

/// Reads the named columns of a CSV file with a header row as numbers.
///
/// Errors (each naming the file): missing or unreadable file; empty file or no data rows;
/// unknown column; a row with a different number of cells than the header (ragged); a cell
/// that is not a finite number.
pub fn read_csv_table(path: &Path, columns: &[String]) -> Result<CsvTable, ModelError> {
    let (header, rdr) = open(path)?;
    table_from(header, rdr, path, columns)
}

/// Reads the named columns of a CSV table with a header row from `reader`, with the checks
/// of [`read_csv_table`] (which reads a file through it); `path` only names the source in
/// errors. Any bytes give a table or a [`ModelError::Data`], never a panic.
pub fn read_csv_table_from<R: Read>(
    reader: R,
    path: &Path,
    columns: &[String],
) -> Result<CsvTable, ModelError> {
    let (header, rdr) = open_reader(reader, path)?;
    table_from(header, rdr, path, columns)
}

/// Every column of a CSV table read from `reader`, in the header's order, in one parse (the
/// same checks as [`read_csv_table_from`] with the header's names).
pub fn read_csv_all_from<R: Read>(reader: R, path: &Path) -> Result<CsvTable, ModelError> {
    let (header, rdr) = open_reader(reader, path)?;
    let columns = header.clone();
    table_from(header, rdr, path, &columns)
}

/// The header's column names of a CSV table read from `reader` (checked as
/// [`read_csv_table`] checks them; `path` names the source in errors).
pub fn read_csv_header_from<R: Read>(reader: R, path: &Path) -> Result<Vec<String>, ModelError> {
    Ok(open_reader(reader, path)?.0)
}

fn table_from<R: Read>(
    header: Vec<String>,
    mut rdr: csv::Reader<R>,
    path: &Path,
    columns: &[String],
) -> Result<CsvTable, ModelError> {
    // Names are unique (checked on opening): one map, so asking for every column of a wide
    // table stays linear.
    let by_name: std::collections::HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    let idx = columns
        .iter()
        .map(|c| match by_name.get(c.as_str()) {
            Some(&i) => Ok(i),
            None => column_index(path, &header, c),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut values = Vec::new();
    let mut rows = 0;
    let mut record = csv::StringRecord::new();
    loop {
        let more = rdr.read_record(&mut record).map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            ModelError::data(path, format!("line {line}: {e}"))
        })?;
        if !more {
            break;
        }
        let line = record
            .position()
            .map(|p| p.line())
            .unwrap_or(rows as u64 + 2);
        if record.len() != header.len() {
            return Err(ModelError::data(
                path,
                format!(
                    "line {line}: {} cells, but the header has {} columns (ragged row)",
                    record.len(),
                    header.len()
                ),
            ));
        }
        for (&i, name) in idx.iter().zip(columns) {
            let cell = record.get(i).unwrap_or("").trim();
            match cell.parse::<f32>() {
                Ok(v) if v.is_finite() => values.push(v),
                _ => {
                    return Err(ModelError::data(
                        path,
                        format!("line {line}, column `{name}`: `{cell}` is not a finite number"),
                    ))
                }
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(ModelError::data(path, "has a header but no data rows"));
    }
    Ok(CsvTable {
        columns: columns.to_vec(),
        rows,
        values,
    })
}

/// Reads one column of a CSV file as a series of numbers (errors as [`read_csv_table`]).
pub fn read_csv_series(path: &Path, column: &str) -> Result<Vec<f32>, ModelError> {
    Ok(read_csv_table(path, &[column.to_string()])?.values)
}

/// The header's column names of a CSV file.
fn header_of(path: &Path) -> Result<Vec<String>, ModelError> {
    Ok(open(path)?.0)
}

fn standardize(values: &mut [f32], width: usize, col: usize, train_rows: usize) {
    let n = train_rows.max(1) as f64;
    let mean = (0..train_rows)
        .map(|r| values[r * width + col] as f64)
        .sum::<f64>()
        / n;
    let var = (0..train_rows)
        .map(|r| (values[r * width + col] as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
    for r in 0..values.len() / width {
        let v = &mut values[r * width + col];
        *v = ((*v as f64 - mean) / sd) as f32;
    }
}

pub(super) fn csv_task(c: &CsvTask, rng: &mut Rng64) -> Result<TaskData, ModelError> {
    let features = match &c.features {
        Some(f) => f.clone(),
        None => header_of(&c.path)?
            .into_iter()
            .filter(|h| !c.targets.contains(h))
            .collect(),
    };
    if features.is_empty() {
        return Err(ModelError::data(
            &c.path,
            "no feature columns left besides the target column(s)",
        ));
    }
    let (nf, nt) = (features.len(), c.targets.len());
    let mut cols = features.clone();
    cols.extend(c.targets.iter().cloned());
    let table = read_csv_table(&c.path, &cols)?;
    let n = table.rows;
    if n < 2 {
        return Err(ModelError::data(
            &c.path,
            "needs at least 2 data rows (one to train, one to hold out)",
        ));
    }
    let w = nf + nt;
    if let Some(k) = c.classes {
        for r in 0..n {
            let v = table.values[r * w + nf];
            if v < 0.0 || v.fract() != 0.0 || v as usize >= k {
                return Err(ModelError::data(
                    &c.path,
                    format!(
                        "line {}, column `{}`: {v} is not a class index in 0..{k}",
                        r + 2,
                        c.targets[0]
                    ),
                ));
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    if c.shuffle_rows {
        rng.shuffle(&mut order);
    }
    let mut vals = Vec::with_capacity(n * w);
    for &r in &order {
        vals.extend_from_slice(&table.values[r * w..(r + 1) * w]);
    }
    let n_train = ((n as f64 * c.train_fraction).round() as usize).clamp(1, n - 1);
    if c.standardize_features {
        for col in 0..nf {
            standardize(&mut vals, w, col, n_train);
        }
    }
    if c.standardize_targets && c.classes.is_none() {
        for col in nf..w {
            standardize(&mut vals, w, col, n_train);
        }
    }
    let mut x = Vec::with_capacity(n * nf);
    let mut y = Vec::with_capacity(n * nt);
    for r in 0..n {
        x.extend_from_slice(&vals[r * w..r * w + nf]);
        y.extend_from_slice(&vals[r * w + nf..(r + 1) * w]);
    }
    let (train, test) = split(x, y, n, c.train_fraction);
    let (outputs, targets) = match c.classes {
        Some(k) => (k, Targets::Classes),
        None => (nt, Targets::Values),
    };
    Ok(TaskData {
        train,
        test,
        steps: 1,
        input: nf,
        outputs,
        targets,
    })
}

pub(super) fn csv_series_task(c: &CsvSeriesTask) -> Result<TaskData, ModelError> {
    let mut s = read_csv_series(&c.path, &c.column)?;
    let span = c.window + c.horizon;
    if s.len() < span + 1 {
        return Err(ModelError::data(
            &c.path,
            format!(
                "column `{}` has {} values, but window {} + horizon {} needs at least {} (two samples)",
                c.column,
                s.len(),
                c.window,
                c.horizon,
                span + 1
            ),
        ));
    }
    let n = s.len() - span + 1;
    let n_train = ((n as f64 * c.train_fraction).round() as usize).clamp(1, n - 1);
    if c.standardize {
        let covered = n_train - 1 + span;
        standardize(&mut s[..], 1, 0, covered);
    }
    let mut x = Vec::with_capacity(n * c.window);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        x.extend_from_slice(&s[i..i + c.window]);
        y.push(s[i + span - 1]);
    }
    let (train, test) = split(x, y, n, c.train_fraction);
    debug_assert_eq!(train.n, n_train);
    Ok(TaskData {
        train,
        test,
        steps: c.window,
        input: 1,
        outputs: 1,
        targets: Targets::Values,
    })
}

/// Checks that a table's feature count matches a model's input size, naming the file.
pub fn check_width(path: &Path, features: usize, model_inputs: usize) -> Result<(), ModelError> {
    if features != model_inputs {
        return Err(ModelError::data(
            path,
            format!("line 1 (header): {features} feature columns, but the model expects {model_inputs} inputs"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn err(path: &Path, cols: &[&str]) -> String {
        let cols: Vec<String> = cols.iter().map(|s| s.to_string()).collect();
        read_csv_table(path, &cols).unwrap_err().to_string()
    }

    #[test]
    fn reads_every_column_in_one_parse() {
        let t = read_csv_all_from(&b"a, b\n1,2\n3,4\n"[..], Path::new("t.csv")).unwrap();
        assert_eq!(t.columns, ["a", "b"]);
        assert_eq!((t.rows, t.values), (2, vec![1.0, 2.0, 3.0, 4.0]));
        let e = read_csv_all_from(&b"a,a\n1,2\n"[..], Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("columns 1 and 2 are both named `a`"), "{e}");
    }

    #[test]
    fn reads_numbers() {
        let f = file("a,b,c\n1,2,3\n4,5,6\n");
        let t = read_csv_table(f.path(), &["c".into(), "a".into()]).unwrap();
        assert_eq!((t.rows, t.values), (2, vec![3.0, 1.0, 6.0, 4.0]));
    }

    #[test]
    fn reads_from_bytes_as_from_a_file() {
        let text = "a,b,c\n1,2,3\n4,5,6\n";
        let cols = ["c".to_string(), "a".to_string()];
        let from_file = read_csv_table(file(text).path(), &cols).unwrap();
        let path = Path::new("mem.csv");
        assert_eq!(
            read_csv_table_from(text.as_bytes(), path, &cols).unwrap(),
            from_file
        );
        assert_eq!(
            read_csv_header_from(text.as_bytes(), path).unwrap(),
            ["a", "b", "c"]
        );
        let err = read_csv_table_from(&b"a,a\n1,2\n"[..], path, &cols).unwrap_err();
        assert!(err.to_string().contains("mem.csv"), "{err}");
    }

    #[test]
    fn missing_file_names_the_file() {
        let e = err(Path::new("/nonexistent/dir/data.csv"), &["a"]);
        assert!(
            e.contains("/nonexistent/dir/data.csv") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn empty_file_and_header_only() {
        let f = file("");
        let e = err(f.path(), &["a"]);
        assert!(
            e.contains(&f.path().display().to_string()) && e.contains("empty"),
            "{e}"
        );
        let f = file("a,b\n");
        let e = err(f.path(), &["a"]);
        assert!(e.contains("no data rows"), "{e}");
    }

    #[test]
    fn ragged_row_names_the_line() {
        let f = file("a,b\n1,2\n3\n");
        let e = err(f.path(), &["a"]);
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(
            e.contains("line 3: 1 cells, but the header has 2 columns"),
            "{e}"
        );
    }

    #[test]
    fn non_numeric_cell_names_line_and_column() {
        let f = file("a,b\n1,2\n3,x7\n");
        let e = err(f.path(), &["a", "b"]);
        assert!(
            e.contains("line 3, column `b`: `x7` is not a finite number"),
            "{e}"
        );
        let f = file("a\nnan\n");
        assert!(err(f.path(), &["a"]).contains("line 2, column `a`: `nan`"));
    }

    #[test]
    fn special_files_are_refused() {
        for p in ["/dev/zero", "/tmp"] {
            let e = err(Path::new(p), &["a"]);
            assert!(e.contains("not a regular file"), "{p}: {e}");
        }
    }

    #[test]
    fn duplicate_column_names_are_an_error_naming_both() {
        let f = file("a,a,y\n1,2,3\n");
        let e = err(f.path(), &["y"]);
        assert!(e.contains("columns 1 and 2 are both named `a`"), "{e}");
    }

    #[test]
    fn unknown_column_lists_the_header() {
        let f = file("a,b\n1,2\n");
        let e = err(f.path(), &["zz"]);
        assert!(e.contains("no column `zz`") && e.contains("a, b"), "{e}");
    }

    #[test]
    fn width_not_matching_the_model() {
        let e = check_width(Path::new("data/digits.csv"), 64, 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data/digits.csv")
                && e.contains("64 feature columns")
                && e.contains("expects 10"),
            "{e}"
        );
    }

    #[test]
    fn class_index_out_of_range() {
        let f = file("x,label\n0.5,1\n0.2,3\n");
        let spec = CsvTask {
            path: f.path().to_path_buf(),
            targets: vec!["label".into()],
            features: None,
            classes: Some(3),
            train_fraction: 0.5,
            shuffle_rows: false,
            standardize_features: false,
            standardize_targets: false,
        };
        let e = csv_task(&spec, &mut Rng64::new(0, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3, column `label`: 3 is not a class index in 0..3"),
            "{e}"
        );
    }

    #[test]
    fn series_windows_and_standardisation() {
        let f = file("t,v\n0,1\n1,2\n2,3\n3,4\n4,5\n5,6\n");
        let mut spec = CsvSeriesTask {
            path: f.path().to_path_buf(),
            column: "v".into(),
            window: 2,
            horizon: 2,
            train_fraction: 0.67,
            standardize: false,
        };
        let d = csv_series_task(&spec).unwrap();
        // samples: [1,2]->4, [2,3]->5, [3,4]->6
        assert_eq!((d.train.n, d.test.n), (2, 1));
        assert_eq!(d.train.x, vec![1.0, 2.0, 2.0, 3.0]);
        assert_eq!(d.train.y, vec![4.0, 5.0]);
        assert_eq!(d.test.y, vec![6.0]);
        spec.standardize = true;
        let d = csv_series_task(&spec).unwrap();
        // training values 1..5 (mean 3, sd sqrt 2)
        assert!(
            (d.train.x[0] as f64 + 2.0 / 2f64.sqrt()).abs() < 1e-6,
            "{:?}",
            d.train.x
        );
        spec.window = 5;
        let e = csv_series_task(&spec).unwrap_err().to_string();
        assert!(
            e.contains("has 6 values") && e.contains("needs at least 8"),
            "{e}"
        );
    }
}
