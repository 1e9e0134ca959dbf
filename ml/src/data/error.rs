//! The one error type of `zbmd_ml::data`.

use std::fmt;
use std::path::PathBuf;

/// Where in a file a bad record sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A 1-based line of a text (CSV) file.
    Line(usize),
    /// A 0-based item of a binary (IDX) file.
    Item(usize),
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Line(line) => write!(f, "line {line}"),
            Record::Item(item) => write!(f, "item {item} (0-based)"),
        }
    }
}

/// What went wrong reading, checking or iterating a dataset. Every variant
/// about a file names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file starts with the gzip magic but does not decompress.
    #[error("{}: corrupt or truncated gzip data: {source}", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        source: std::io::Error,
    },
    /// The file (after decompression) holds no data.
    #[error("{}: the file is empty (no data rows)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`FILE_BYTES_MAX`](super::FILE_BYTES_MAX).
    #[error("{}: larger than the {limit_bytes}-byte limit for a data file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit_bytes: u64,
    },
    /// Memory for the data could not be allocated.
    #[error(
        "{}: cannot allocate {bytes} bytes for its data: the file is too large for this \
         machine's memory",
        path.display()
    )]
    OutOfMemory {
        /// The file.
        path: PathBuf,
        /// The allocation that failed, in bytes.
        bytes: u128,
    },
    /// Rows have more features than [`FEATURES_MAX`](super::FEATURES_MAX).
    #[error(
        "{}: rows of {features} features, above the limit of FEATURES_MAX = {max} \
         (no model layer is that wide)",
        path.display()
    )]
    TooManyFeatures {
        /// The file.
        path: PathBuf,
        /// Features per row the file has.
        features: u64,
        /// The limit.
        max: usize,
    },
    /// An IDX file is shorter than its header says.
    #[error(
        "{}: truncated: the header promises {expected_bytes} bytes, the file has {found_bytes}",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The size the header implies (decompressed).
        expected_bytes: u64,
        /// The size present (decompressed).
        found_bytes: u64,
    },
    /// An IDX file is longer than its header says.
    #[error(
        "{}: {found_bytes} bytes where the header promises {expected_bytes}: trailing data, \
         or a header that was damaged",
        path.display()
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// The size the header implies.
        expected_bytes: u64,
        /// The size present.
        found_bytes: u64,
    },
    /// An IDX file's magic number is not the one expected (images and labels
    /// swapped, or not an IDX file).
    #[error(
        "{}: wrong magic number {found:#010x}, expected {expected:#010x} ({what})",
        path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number read.
        found: u32,
        /// The magic number expected.
        expected: u32,
        /// What the expected number stands for.
        what: &'static str,
    },
    /// A header is well-formed but unusable (a zero dimension, say).
    #[error("{}: bad header: {reason}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A label is not below the class count.
    #[error("{}: {record}: label {label} is out of range for {classes} classes", path.display())]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Where the label is.
        record: Record,
        /// The label read (negative if the file had a negative number).
        label: i64,
        /// The number of classes (labels must be below it).
        classes: u32,
    },
    /// A CSV label is a number but not a whole one.
    #[error("{}: line {line}: label {field:?} is not a whole number", path.display())]
    LabelNotInteger {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The field as read.
        field: String,
    },
    /// A CSV row has the wrong number of fields.
    #[error("{}: line {line}: {found} fields, expected {expected}", path.display())]
    WrongWidth {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// Fields on that line.
        found: usize,
        /// Fields expected (from the options, or the first data row).
        expected: usize,
    },
    /// A CSV field is not a finite number.
    #[error("{}: line {line}, column {column}: {field:?} is not a finite number", path.display())]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The 1-based column.
        column: usize,
        /// The field as read.
        field: String,
    },
    /// A CSV field is a finite number that `f32` cannot hold (`1e39`
    /// becomes infinity as `f32`).
    #[error(
        "{}: line {line}, column {column}: {field:?} is beyond the range of f32 \
         (about ±3.4e38); rescale the column",
        path.display()
    )]
    NotF32 {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The 1-based column.
        column: usize,
        /// The field as read.
        field: String,
    },
    /// A CSV label too large to be a class index at all.
    #[error(
        "{}: line {line}: label {field:?} is far outside 0..{classes}; is this the label \
         column (CsvOptions::label_column)?",
        path.display()
    )]
    LabelHuge {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The field as read.
        field: String,
        /// The number of classes (labels must be below it).
        classes: u32,
    },
    /// The first CSV row mixes numbers and text, so it is neither a header
    /// (no numbers) nor a data row (no text).
    #[error(
        "{}: line {line}, column {column}: {field:?} is not a number but other fields of the \
         first row are: a header has no numbers and a data row no text; fix the field, or \
         say whether the file has a header (CsvOptions::has_header)",
        path.display()
    )]
    MixedFirstRow {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the first row.
        line: usize,
        /// The 1-based column of the first field that is not a number.
        column: usize,
        /// That field as read.
        field: String,
    },
    /// A CSV file is not UTF-8 text.
    #[error("{}: not UTF-8 text (bad byte at offset {offset})", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// The offset of the first bad byte (decompressed).
        offset: usize,
    },
    /// The label column named in the options is not in the rows.
    #[error("{}: label column {column} (0-based) is outside rows of {width} fields", path.display())]
    LabelColumnOutOfRange {
        /// The file.
        path: PathBuf,
        /// The 0-based column asked for.
        column: usize,
        /// Fields per row.
        width: usize,
    },
    /// The images and labels files hold different numbers of items.
    #[error(
        "{} has {images} images but {} has {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// The labels file.
        labels_path: PathBuf,
        /// Images in it.
        images: u64,
        /// Labels in it.
        labels: u64,
    },
    /// A dataset's parts do not fit together.
    #[error("dataset {name}: {reason}")]
    Inconsistent {
        /// The dataset.
        name: String,
        /// What does not fit.
        reason: String,
    },
    /// A train/test split was asked for with an unusable fraction.
    #[error("dataset {name}: cannot split with test fraction {test_fraction}: {reason}")]
    BadSplit {
        /// The dataset.
        name: String,
        /// The fraction asked for.
        test_fraction: f64,
        /// Why it does not work.
        reason: String,
    },
    /// A data loader was configured in a way that cannot yield batches.
    #[error("data loader over {name}: {reason}")]
    BadLoader {
        /// The dataset.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A prefetch depth outside `1..=PREFETCH_DEPTH_MAX`.
    #[error("prefetch depth {depth} is outside 1..={max}")]
    PrefetchDepth {
        /// The depth asked for.
        depth: usize,
        /// The bound, [`PREFETCH_DEPTH_MAX`](super::PREFETCH_DEPTH_MAX).
        max: usize,
    },
    /// A saved loader position does not belong to this loader.
    #[error(
        "data loader over {name}: the saved position has {field} = {found}, this loader has \
         {expected}; it was saved by a differently configured run"
    )]
    PositionMismatch {
        /// The dataset.
        name: String,
        /// The field that differs.
        field: &'static str,
        /// This loader's value.
        expected: u64,
        /// The position's value.
        found: u64,
    },
}
