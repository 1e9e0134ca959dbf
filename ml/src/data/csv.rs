//! Numeric CSV: one row per line, every field a number, one of them the
//! class label. No quoting (a numeric file has nothing to quote); blank lines
//! are skipped; `\r\n` line ends are accepted.

use std::path::Path;

use super::{CLASSES_MAX, DataError, Dataset, Record, decompress_if_gzip, stem};

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
    /// with any non-numeric field is a header).
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

/// Loads a numeric CSV file (gzip'd or raw, detected by the `1f 8b` magic).
pub fn load_csv(path: &Path, options: &CsvOptions) -> Result<Dataset, DataError> {
    let raw =
        std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    parse(path, &raw, options)
}

/// Parses CSV bytes (gzip'd or raw) as if read from `path`.
pub(super) fn parse(path: &Path, raw: &[u8], options: &CsvOptions) -> Result<Dataset, DataError> {
    let bytes = decompress_if_gzip(path, raw.to_vec())?;
    let text = std::str::from_utf8(&bytes).map_err(|error| DataError::NotText {
        path: path.to_path_buf(),
        offset: error.valid_up_to(),
    })?;
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.trim().is_empty())
        .peekable();
    let header = match (options.has_header, lines.peek()) {
        (Some(has), _) => has,
        (None, Some((_, first))) => {
            first.split(options.delimiter).any(|field| parse_number(field).is_none())
        }
        (None, None) => false,
    };
    if header {
        lines.next();
    }
    let mut rows = Rows::new(path, options);
    for (line, text) in lines {
        rows.push(line, text)?;
    }
    rows.finish()
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
        let label_at = match self.options.label_column {
            LabelColumn::Last => width - 1,
            LabelColumn::First => 0,
            LabelColumn::Index(column) if column < width => column,
            LabelColumn::Index(column) => {
                return Err(DataError::LabelColumnOutOfRange { path: path(), column, width });
            }
        };
        for (column, field) in text.split(self.options.delimiter).enumerate() {
            let Some(value) = parse_number(field) else {
                return Err(DataError::NotNumeric {
                    path: path(),
                    line,
                    column: column + 1,
                    field: field.to_string(),
                });
            };
            if column == label_at {
                self.labels.push(self.label(line, field, value)?);
            } else {
                self.features.push(value as f32);
            }
        }
        Ok(())
    }

    fn label(&self, line: usize, field: &str, value: f64) -> Result<u32, DataError> {
        if value.fract() != 0.0 {
            return Err(DataError::LabelNotInteger {
                path: self.path.to_path_buf(),
                line,
                field: field.to_string(),
            });
        }
        let limit = self.options.classes.unwrap_or(CLASSES_MAX).min(CLASSES_MAX);
        if value < 0.0 || value >= f64::from(limit) {
            return Err(DataError::LabelOutOfRange {
                path: self.path.to_path_buf(),
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
}
