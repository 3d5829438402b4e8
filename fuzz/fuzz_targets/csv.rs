//! The CSV loader: any bytes in, a table or an error out, never a panic. Reads every column
//! of the header, the first one alone, and two named columns.
#![no_main]

use std::path::Path;

use gradguard::models::tasks::{read_csv_header_from, read_csv_table_from, CsvTable};
use libfuzzer_sys::fuzz_target;

fn check(table: &CsvTable) {
    assert!(table.rows > 0, "a table has a data row");
    assert_eq!(table.values.len(), table.rows * table.columns.len());
    assert!(table.values.iter().all(|v| v.is_finite()));
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("<fuzz>");
    if let Ok(header) = read_csv_header_from(data, path) {
        if let Ok(table) = read_csv_table_from(data, path, &header) {
            check(&table);
        }
        if let Some(first) = header.first() {
            if let Ok(table) = read_csv_table_from(data, path, std::slice::from_ref(first)) {
                check(&table);
            }
        }
    }
    let named = ["x".to_string(), "y".to_string()];
    if let Ok(table) = read_csv_table_from(data, path, &named) {
        check(&table);
    }
});
