//! Numeric CSV: one row per line, every field a number, one of them the
//! class label. No quoting (a numeric file has nothing to quote); blank lines
//! are skipped; `\r\n` line ends and a leading UTF-8 byte-order mark are
//! accepted.
//!
//! Nothing is dropped silently: a first row is taken as a header only when
//! none of its fields is a number (and then it is returned, see
//! [`CsvData::header`], and logged), a first row mixing numbers and text is
//! an error, and every feature must be a finite `f32`.

use std::path::Path;

use super::{
    CLASSES_MAX, DataError, Dataset, FEATURES_MAX, Record, decompress_if_gzip, read_bounded, stem,
    try_reserve,
};

/// Which field of a row is the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelColumn {
    /// The last field (the UCI and scikit-learn convention).
    #[default]
    Last,
    /// The first field (the Kaggle MNIST CSV convention).
    First,
    /// The field at this 0-based index.
    Index(usize),
}

/// Options for [`load_csv`].
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Which field is the label.
    pub label_column: LabelColumn,
    /// Whether the first line is a header: `None` detects it (a first line
    /// none of whose fields is a number is a header; one that mixes numbers
    /// and text is a [`DataError::MixedFirstRow`]).
    pub has_header: Option<bool>,
    /// Fields per row, label included; `None` takes the first data row's.
    pub expected_width: Option<usize>,
    /// The number of classes; `None` takes the largest label plus one.
    pub classes: Option<u32>,
    /// The field separator.
    pub delimiter: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            label_column: LabelColumn::Last,
            has_header: None,
            expected_width: None,
            classes: None,
            delimiter: ',',
        }
    }
}

/// A CSV file read: the dataset, and the first row when it was taken as a
/// header (so a caller can show which row was not data).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvData {
    /// The rows.
    pub dataset: Dataset,
    /// The header's fields, trimmed, when the first row was one.
    pub header: Option<Vec<String>>,
}

/// Loads a numeric CSV file (gzip'd or raw, detected by the `1f 8b` magic).
/// A first row taken as a header is logged (`tracing` at INFO); use
/// [`load_csv_with_header`] to have it returned.
pub fn load_csv(path: &Path, options: &CsvOptions) -> Result<Dataset, DataError> {
    let data = load_csv_with_header(path, options)?;
    if let Some(header) = &data.header {
        tracing::info!(path = %path.display(), ?header, "CSV: the first row is a header, not data");
    }
    Ok(data.dataset)
}

/// Loads a numeric CSV file as [`load_csv`] does, returning the header too.
pub fn load_csv_with_header(path: &Path, options: &CsvOptions) -> Result<CsvData, DataError> {
    parse_csv(path, &read_bounded(path)?, options)
}

/// Parses CSV bytes (gzip'd or raw) as if read from `path`, which only names
/// the source in errors and the dataset.
pub fn parse_csv(path: &Path, raw: &[u8], options: &CsvOptions) -> Result<CsvData, DataError> {
    let bytes = decompress_if_gzip(path, raw.to_vec())?;
    let text = std::str::from_utf8(&bytes).map_err(|error| DataError::NotText {
        path: path.to_path_buf(),
        offset: error.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.trim().is_empty())
        .peekable();
    let header = match lines.peek() {
        Some(&(line, first)) if is_header(path, line, first, options)? => {
            lines.next();
            Some((line, first.split(options.delimiter).map(|f| f.trim().to_string()).collect()))
        }
        _ => None,
    };
    let mut rows = Rows::new(path, options);
    for (line, text) in lines {
        rows.push(line, text)?;
    }
    let dataset = rows.finish()?;
    let header = header.map(|(line, fields)| header_fits(path, line, fields, &dataset));
    Ok(CsvData { dataset, header: header.transpose()? })
}

/// The header's `fields` (on `line`), when there are as many as the rows
/// have: a header of another width is a wrong delimiter or a damaged file.
fn header_fits(
    path: &Path,
    line: usize,
    fields: Vec<String>,
    dataset: &Dataset,
) -> Result<Vec<String>, DataError> {
    let expected = dataset.dim + 1;
    if fields.len() != expected {
        return Err(DataError::WrongWidth {
            path: path.to_path_buf(),
            line,
            found: fields.len(),
            expected,
        });
    }
    Ok(fields)
}

/// Parses CSV bytes as [`parse_csv`] does, keeping only the dataset.
pub(super) fn parse(path: &Path, raw: &[u8], options: &CsvOptions) -> Result<Dataset, DataError> {
    parse_csv(path, raw, options).map(|data| data.dataset)
}

/// Whether the first row `text` (on `line`) is a header: as the options
/// say, or, left to detect, when none of its fields is a number. A row with
/// both is an error naming its first field that is not a number.
fn is_header(
    path: &Path,
    line: usize,
    text: &str,
    options: &CsvOptions,
) -> Result<bool, DataError> {
    if let Some(has) = options.has_header {
        return Ok(has);
    }
    let looks_numeric = |field: &str| field.trim().parse::<f64>().is_ok();
    let fields = || text.split(options.delimiter);
    if !fields().any(looks_numeric) {
        return Ok(true);
    }
    match fields().enumerate().find(|(_, field)| !looks_numeric(field)) {
        Some((column, field)) => Err(DataError::MixedFirstRow {
            path: path.to_path_buf(),
            line,
            column: column + 1,
            field: field.to_string(),
        }),
        None => Ok(false),
    }
}

/// What a feature field holds.
enum Feature {
    /// A finite `f32`.
    Value(f32),
    /// No finite number at all.
    NotNumber,
    /// A finite number `f32` cannot hold.
    BeyondF32,
}

/// A feature field as an `f32`. Finiteness is checked on the `f32`, so
/// `1e39` (finite as `f64`, infinite as `f32`) is caught.
fn parse_feature(field: &str) -> Feature {
    match parse_number(field) {
        None => Feature::NotNumber,
        Some(wide) if (wide as f32).is_finite() => Feature::Value(wide as f32),
        Some(_) => Feature::BeyondF32,
    }
}

/// A finite number, or `None`.
fn parse_number(field: &str) -> Option<f64> {
    field.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// The rows read so far.
struct Rows<'a> {
    path: &'a Path,
    options: &'a CsvOptions,
    width: Option<usize>,
    features: Vec<f32>,
    labels: Vec<u32>,
}

impl<'a> Rows<'a> {
    fn new(path: &'a Path, options: &'a CsvOptions) -> Self {
        Rows {
            path,
            options,
            width: options.expected_width,
            features: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn push(&mut self, line: usize, text: &str) -> Result<(), DataError> {
        let width = self.check_width(line, text)?;
        let label_at = self.label_at(width)?;
        try_reserve(self.path, &mut self.features, width - 1)?;
        try_reserve(self.path, &mut self.labels, 1)?;
        for (column, field) in text.split(self.options.delimiter).enumerate() {
            if column == label_at {
                let label = self.label(line, column, field)?;
                self.labels.push(label);
                continue;
            }
            match parse_feature(field) {
                Feature::Value(value) => self.features.push(value),
                Feature::NotNumber => return Err(self.not_numeric(line, column, field)),
                Feature::BeyondF32 => {
                    return Err(DataError::NotF32 {
                        path: self.path.to_path_buf(),
                        line,
                        column: column + 1,
                        field: field.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The row's field count, checked against the first row's (or the
    /// options'), against a label and a feature at least, and against
    /// [`FEATURES_MAX`].
    fn check_width(&mut self, line: usize, text: &str) -> Result<usize, DataError> {
        let path = || self.path.to_path_buf();
        let found = text.split(self.options.delimiter).count();
        let width = *self.width.get_or_insert(found);
        if found != width {
            return Err(DataError::WrongWidth { path: path(), line, found, expected: width });
        }
        // A label and at least one feature.
        if width < 2 {
            return Err(DataError::WrongWidth { path: path(), line, found, expected: 2 });
        }
        if width - 1 > FEATURES_MAX {
            return Err(DataError::TooManyFeatures {
                path: path(),
                features: (width - 1) as u64,
                max: FEATURES_MAX,
            });
        }
        Ok(width)
    }

    fn label_at(&self, width: usize) -> Result<usize, DataError> {
        match self.options.label_column {
            LabelColumn::Last => Ok(width - 1),
            LabelColumn::First => Ok(0),
            LabelColumn::Index(column) if column < width => Ok(column),
            LabelColumn::Index(column) => Err(DataError::LabelColumnOutOfRange {
                path: self.path.to_path_buf(),
                column,
                width,
            }),
        }
    }

    fn not_numeric(&self, line: usize, column: usize, field: &str) -> DataError {
        DataError::NotNumeric {
            path: self.path.to_path_buf(),
            line,
            column: column + 1,
            field: field.to_string(),
        }
    }

    fn label(&self, line: usize, column: usize, field: &str) -> Result<u32, DataError> {
        let path = || self.path.to_path_buf();
        let Some(value) = parse_number(field) else {
            return Err(self.not_numeric(line, column, field));
        };
        if value.fract() != 0.0 {
            return Err(DataError::LabelNotInteger {
                path: path(),
                line,
                field: field.to_string(),
            });
        }
        let limit = self.options.classes.unwrap_or(CLASSES_MAX).min(CLASSES_MAX);
        // Beyond ±2^53 an f64 no longer holds every whole number: no class
        // index is anywhere near, and the value would print wrongly.
        const EXACT_MAX: f64 = 9_007_199_254_740_992.0;
        if value.abs() > EXACT_MAX {
            return Err(DataError::LabelHuge {
                path: path(),
                line,
                field: field.to_string(),
                classes: limit,
            });
        }
        if value < 0.0 || value >= f64::from(limit) {
            return Err(DataError::LabelOutOfRange {
                path: path(),
                record: Record::Line(line),
                label: value as i64,
                classes: limit,
            });
        }
        Ok(value as u32)
    }

    fn finish(self) -> Result<Dataset, DataError> {
        let (Some(width), false) = (self.width, self.labels.is_empty()) else {
            return Err(DataError::Empty { path: self.path.to_path_buf() });
        };
        let classes = match self.options.classes {
            Some(classes) => classes,
            None => self.labels.iter().copied().max().map_or(1, |max| max + 1),
        };
        Dataset::new(stem(self.path), self.features, self.labels, width - 1, classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str, options: &CsvOptions) -> Result<Dataset, DataError> {
        parse(Path::new("t.csv"), text.as_bytes(), options)
    }

    #[test]
    fn header_is_detected_and_label_columns_are_honoured() {
        let text = "a,b,label\n1,2,0\n3,4,1\r\n\n";
        let data = parse_str(text, &CsvOptions::default()).unwrap();
        assert_eq!(data.features, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(data.labels, vec![0, 1]);
        assert_eq!((data.dim, data.classes), (2, 2));
        let first = CsvOptions { label_column: LabelColumn::First, ..CsvOptions::default() };
        let data = parse_str("1,2,0\n0,4,1\n", &first).unwrap();
        assert_eq!(data.labels, vec![1, 0]);
        assert_eq!(data.features, vec![2.0, 0.0, 4.0, 1.0]);
        let middle = CsvOptions { label_column: LabelColumn::Index(1), ..CsvOptions::default() };
        assert_eq!(parse_str("5,2,7\n", &middle).unwrap().labels, vec![2]);
    }

    #[test]
    fn a_header_only_file_is_empty_and_whole_float_labels_are_accepted() {
        assert!(matches!(parse_str("x,y\n", &CsvOptions::default()), Err(DataError::Empty { .. })));
        assert_eq!(parse_str("1,3.0\n", &CsvOptions::default()).unwrap().labels, vec![3]);
        assert!(matches!(
            parse_str("1,2.5\n", &CsvOptions::default()),
            Err(DataError::LabelNotInteger { line: 1, .. })
        ));
    }

    #[test]
    fn a_feature_beyond_f32_is_an_error_naming_line_column_and_value() {
        let error = parse_str("1,2,0\n3,1e39,1\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(&error, DataError::NotF32 { line: 2, column: 2, field, .. } if field == "1e39"),
            "{error:?}"
        );
        assert!(error.to_string().starts_with("t.csv: line 2, column 2: \"1e39\""), "{error}");
        // Finite as f32 still loads, however small.
        assert_eq!(
            parse_str("1e-50,3e38,0\n", &CsvOptions::default()).unwrap().features,
            [0.0, 3e38]
        );
    }

    #[test]
    fn a_byte_order_mark_is_stripped_not_taken_for_a_header() {
        let data = parse_csv(
            Path::new("t.csv"),
            "\u{feff}1,2,0\n3,4,1\n".as_bytes(),
            &CsvOptions::default(),
        )
        .unwrap();
        assert_eq!(data.dataset.len(), 2);
        assert_eq!(data.header, None);
        let data = parse_csv(
            Path::new("t.csv"),
            "\u{feff}a,b,y\n3,4,1\n".as_bytes(),
            &CsvOptions::default(),
        )
        .unwrap();
        assert_eq!(data.header, Some(vec!["a".to_string(), "b".into(), "y".into()]));
    }

    #[test]
    fn a_first_row_with_a_typo_is_an_error_not_a_header() {
        let error = parse_str("\n1,2x,0\n3,4,1\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(&error, DataError::MixedFirstRow { line: 2, column: 2, field, .. } if field == "2x"),
            "{error:?}"
        );
        assert!(error.to_string().contains("has_header"), "{error}");
        // Said to have a header, the row is dropped as one.
        let header = CsvOptions { has_header: Some(true), ..CsvOptions::default() };
        assert_eq!(parse_str("1,2x,0\n3,4,1\n", &header).unwrap().len(), 1);
    }

    #[test]
    fn a_dropped_header_is_returned() {
        let data = parse_csv(Path::new("t.csv"), b"x1, x2 ,label\n1,2,0\n", &CsvOptions::default())
            .unwrap();
        assert_eq!(data.header, Some(vec!["x1".to_string(), "x2".into(), "label".into()]));
        assert_eq!(data.dataset.features, [1.0, 2.0]);
    }

    #[test]
    fn huge_negative_and_fractional_labels_are_errors() {
        let error = parse_str("1,1e300\n", &CsvOptions::default()).unwrap_err();
        assert!(matches!(&error, DataError::LabelHuge { line: 1, field, .. } if field == "1e300"));
        assert!(error.to_string().contains("label column"), "{error}");
        assert!(matches!(
            parse_str("1,-3\n", &CsvOptions::default()),
            Err(DataError::LabelOutOfRange { label: -3, .. })
        ));
        assert!(matches!(
            parse_str("1,nan\n", &CsvOptions::default()),
            Err(DataError::NotNumeric { line: 1, column: 2, .. })
        ));
    }

    #[test]
    fn ragged_rows_and_rows_of_one_field_are_errors() {
        assert!(matches!(
            parse_str("1,2,0\n3,1\n", &CsvOptions::default()),
            Err(DataError::WrongWidth { line: 2, found: 2, expected: 3, .. })
        ));
        assert!(matches!(
            parse_str("1\n2\n", &CsvOptions::default()),
            Err(DataError::WrongWidth { line: 1, found: 1, expected: 2, .. })
        ));
        assert!(matches!(
            parse_str("\u{feff}\n \n", &CsvOptions::default()),
            Err(DataError::Empty { .. })
        ));
    }

    #[test]
    fn rows_wider_than_features_max_are_refused_before_parsing() {
        let row = "0,".repeat(FEATURES_MAX + 1) + "0\n";
        let error = parse_str(&row, &CsvOptions::default()).unwrap_err();
        assert!(matches!(error, DataError::TooManyFeatures { .. }), "{error:?}");
    }

    #[test]
    fn a_header_of_another_width_than_the_rows_is_an_error() {
        let error = parse_str("a,b\n1,2,0\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(error, DataError::WrongWidth { line: 1, found: 2, expected: 3, .. }),
            "{error:?}"
        );
    }
}
