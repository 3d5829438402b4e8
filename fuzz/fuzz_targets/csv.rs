//! The CSV loader: any bytes in, a table or an error out, never a panic. Reads every column
//! (one parse), and the columns `x` and `y` when the header names one of them.
//!
//! Each parse builds a `csv::Reader` (about 13 us in csv-core's DFA construction, most of an
//! execution on small inputs), so the target parses once, or twice when `x`/`y` can be found,
//! and checks the first column against the whole table instead of parsing it again.
#![no_main]

use std::path::Path;

use gradguard::models::tasks::{read_csv_all_from, read_csv_table_from, CsvTable};
use libfuzzer_sys::fuzz_target;

fn check(table: &CsvTable) {
    assert!(table.rows > 0, "a table has a data row");
    assert_eq!(table.values.len(), table.rows * table.columns.len());
    assert!(table.values.iter().all(|v| v.is_finite()));
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("<fuzz>");
    if let Ok(table) = read_csv_all_from(data, path) {
        check(&table);
        // The first column of every row, as reading it alone would give.
        let first: Vec<f32> = table
            .values
            .chunks_exact(table.columns.len())
            .map(|row| row[0])
            .collect();
        assert_eq!(first.len(), table.rows);
        if table.columns.iter().any(|c| c == "x" || c == "y") {
            let named = ["x".to_string(), "y".to_string()];
            if let Ok(xy) = read_csv_table_from(data, path, &named) {
                check(&xy);
                assert_eq!(xy.rows, table.rows);
            }
        }
    }
});
