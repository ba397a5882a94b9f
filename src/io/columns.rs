//! Column conversions shared by the event and item readers: which Arrow types a role
//! accepts, and turning one batch's column into ids, labels or times, with errors that name
//! the file, the column and the row.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, UInt64Type};
use arrow::error::ArrowError;

use super::IoError;
use crate::data::{IdMap, RawId};

/// Types an id column may have, in words (for errors).
pub(crate) const ID_TYPES: &str = "an integer type (Int8..Int64, UInt8..UInt64) or a string \
                                   (Utf8, LargeUtf8, Utf8View, dictionary of strings)";
/// Types a label column may have, in words.
pub(crate) const LABEL_TYPES: &str = "a number (any integer, float or decimal type) or Boolean";
/// Types a time column may have, in words.
pub(crate) const TIME_TYPES: &str =
    "integer seconds (any integer type) or Timestamp (any unit, any time zone)";

/// One column of one file in one role: everything an error about it needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ColumnContext<'a> {
    pub path: &'a Path,
    pub column: &'a str,
    pub role: &'static str,
}

impl ColumnContext<'_> {
    pub(crate) fn type_error(&self, found: &DataType, accepted: &'static str) -> IoError {
        IoError::ColumnType {
            path: self.path.to_path_buf(),
            role: self.role,
            column: self.column.to_string(),
            found: found.clone(),
            accepted,
        }
    }

    fn out_of_range(&self, row: u64, value: u64) -> IoError {
        IoError::ValueOutOfRange {
            path: self.path.to_path_buf(),
            role: self.role,
            column: self.column.to_string(),
            row,
            value,
        }
    }

    /// Arrow failures on a type we accepted are decoding failures of this file.
    fn decode_error(&self, source: ArrowError) -> IoError {
        IoError::Decode {
            path: self.path.to_path_buf(),
            source,
        }
    }
}

/// Whether `dt` is a string type (or a dictionary of strings).
pub(crate) fn is_string(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_string(values),
        _ => false,
    }
}

/// Checks that an id column's type is accepted.
pub(crate) fn check_id_type(ctx: &ColumnContext<'_>, dt: &DataType) -> Result<(), IoError> {
    if dt.is_integer() || is_string(dt) {
        Ok(())
    } else {
        Err(ctx.type_error(dt, ID_TYPES))
    }
}

/// Checks that a label column's type is accepted.
pub(crate) fn check_label_type(ctx: &ColumnContext<'_>, dt: &DataType) -> Result<(), IoError> {
    if dt.is_numeric() || *dt == DataType::Boolean {
        Ok(())
    } else {
        Err(ctx.type_error(dt, LABEL_TYPES))
    }
}

/// Checks that a time column's type is accepted.
pub(crate) fn check_time_type(ctx: &ColumnContext<'_>, dt: &DataType) -> Result<(), IoError> {
    if dt.is_integer() || matches!(dt, DataType::Timestamp(_, _)) {
        Ok(())
    } else {
        Err(ctx.type_error(dt, TIME_TYPES))
    }
}

/// Fails on the first null of `array`; `first_row` is the file row of its element 0.
pub(crate) fn check_no_nulls(
    ctx: &ColumnContext<'_>,
    array: &dyn Array,
    first_row: u64,
) -> Result<(), IoError> {
    if array.null_count() == 0 {
        return Ok(());
    }
    let at = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
    Err(IoError::NullValue {
        path: ctx.path.to_path_buf(),
        role: ctx.role,
        column: ctx.column.to_string(),
        row: first_row + at as u64,
    })
}

/// Any string array (or dictionary of strings) as a plain `Utf8` array.
pub(crate) fn to_utf8(array: &ArrayRef) -> Result<StringArray, ArrowError> {
    let utf8 = match array.data_type() {
        DataType::Utf8 => Arc::clone(array),
        _ => cast(array, &DataType::Utf8)?,
    };
    Ok(utf8.as_string::<i32>().clone())
}

/// An integer column as `i64`: lossless for every type but `UInt64` above `i64::MAX`,
/// which is an error naming the row.
fn integers(
    ctx: &ColumnContext<'_>,
    array: &ArrayRef,
    first_row: u64,
) -> Result<Vec<i64>, IoError> {
    if *array.data_type() == DataType::UInt64 {
        return array
            .as_primitive::<UInt64Type>()
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| i64::try_from(v).map_err(|_| ctx.out_of_range(first_row + i as u64, v)))
            .collect();
    }
    let wide = cast(array, &DataType::Int64).map_err(|e| ctx.decode_error(e))?;
    Ok(wide.as_primitive::<Int64Type>().values().to_vec())
}

/// Interns one batch of an id column into `map`, returning the dense index of each row.
/// The column's type must have passed [`check_id_type`].
pub(crate) fn intern_ids(
    ctx: &ColumnContext<'_>,
    array: &ArrayRef,
    first_row: u64,
    map: &mut IdMap,
) -> Result<Vec<u32>, IoError> {
    check_no_nulls(ctx, array.as_ref(), first_row)?;
    let dt = array.data_type();
    if dt.is_integer() {
        let values = integers(ctx, array, first_row)?;
        return Ok(values
            .into_iter()
            .map(|v| map.intern(RawId::Int(v)))
            .collect());
    }
    if !is_string(dt) {
        return Err(ctx.type_error(dt, ID_TYPES));
    }
    let strings = to_utf8(array).map_err(|e| ctx.decode_error(e))?;
    Ok(strings
        .iter()
        .map(|s| map.intern(RawId::Str(Arc::from(s.unwrap_or_default()))))
        .collect())
}

/// One batch of a label column as `f64` (exactly as stored; the caller checks the range).
pub(crate) fn labels(
    ctx: &ColumnContext<'_>,
    array: &ArrayRef,
    first_row: u64,
) -> Result<Vec<f64>, IoError> {
    check_no_nulls(ctx, array.as_ref(), first_row)?;
    check_label_type(ctx, array.data_type())?;
    let wide = cast(array, &DataType::Float64).map_err(|e| ctx.decode_error(e))?;
    Ok(wide.as_primitive::<Float64Type>().values().to_vec())
}

/// One batch of a time column at its own precision: integer columns as they are, timestamps
/// as `i64` in their unit. This is the order logs are sorted by ([`crate::io::sort`]); it
/// agrees with [`times`], which only rounds it down to seconds.
pub(crate) fn time_values(
    ctx: &ColumnContext<'_>,
    array: &ArrayRef,
    first_row: u64,
) -> Result<Vec<i64>, IoError> {
    check_no_nulls(ctx, array.as_ref(), first_row)?;
    let dt = array.data_type();
    if dt.is_integer() {
        return integers(ctx, array, first_row);
    }
    if !matches!(dt, DataType::Timestamp(_, _)) {
        return Err(ctx.type_error(dt, TIME_TYPES));
    }
    let raw = cast(array, &DataType::Int64).map_err(|e| ctx.decode_error(e))?;
    Ok(raw.as_primitive::<Int64Type>().values().to_vec())
}

/// One batch of a time column as seconds since the epoch (timestamps rounded down).
pub(crate) fn times(
    ctx: &ColumnContext<'_>,
    array: &ArrayRef,
    first_row: u64,
) -> Result<Vec<i64>, IoError> {
    let mut values = time_values(ctx, array, first_row)?;
    let per_second: i64 = match array.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000_000,
        _ => 1,
    };
    if per_second > 1 {
        values
            .iter_mut()
            .for_each(|v| *v = v.div_euclid(per_second));
    }
    Ok(values)
}

/// Checks one batch of an id column without interning it: no nulls, and every integer
/// fits a signed 64-bit id (what [`intern_ids`] would refuse, at the same row).
pub(crate) fn check_ids(
    ctx: &ColumnContext<'_>,
    array: &ArrayRef,
    first_row: u64,
) -> Result<(), IoError> {
    check_no_nulls(ctx, array.as_ref(), first_row)?;
    let dt = array.data_type();
    if *dt == DataType::UInt64 {
        integers(ctx, array, first_row)?;
        return Ok(());
    }
    check_id_type(ctx, dt)
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        BooleanArray, DictionaryArray, Int8Array, Int32Array, LargeStringArray, StringViewArray,
        TimestampMillisecondArray, TimestampNanosecondArray, UInt8Array, UInt64Array,
    };
    use arrow::datatypes::Int32Type;

    use super::*;

    fn ctx() -> ColumnContext<'static> {
        ColumnContext {
            path: Path::new("e.parquet"),
            column: "c",
            role: "user id",
        }
    }

    fn arc(a: impl Array + 'static) -> ArrayRef {
        Arc::new(a)
    }

    #[test]
    fn integer_and_string_ids_of_every_width_intern_to_the_same_raw_ids() {
        let mut map = IdMap::new();
        let a = intern_ids(&ctx(), &arc(Int8Array::from(vec![5, -1, 5])), 0, &mut map).unwrap();
        let b = intern_ids(&ctx(), &arc(UInt64Array::from(vec![7, 5])), 0, &mut map).unwrap();
        let c = intern_ids(&ctx(), &arc(UInt8Array::from(vec![7])), 0, &mut map).unwrap();
        assert_eq!((a, b, c), (vec![0, 1, 0], vec![2, 0], vec![2]));
        assert_eq!(map.raw(1), &RawId::Int(-1));

        let mut map = IdMap::new();
        let large = arc(LargeStringArray::from(vec!["x", "y"]));
        let view = arc(StringViewArray::from(vec!["y", "z"]));
        let dict: DictionaryArray<Int32Type> = vec!["z", "x", "z"].into_iter().collect();
        assert_eq!(intern_ids(&ctx(), &large, 0, &mut map).unwrap(), [0, 1]);
        assert_eq!(intern_ids(&ctx(), &view, 0, &mut map).unwrap(), [1, 2]);
        assert_eq!(
            intern_ids(&ctx(), &arc(dict), 0, &mut map).unwrap(),
            [2, 0, 2]
        );
        assert_eq!(map.raw(2), &RawId::Str("z".into()));
    }

    #[test]
    fn an_unsigned_id_above_i64_max_is_an_error_with_its_row() {
        let mut map = IdMap::new();
        let ids = arc(UInt64Array::from(vec![1, u64::MAX]));
        let err = intern_ids(&ctx(), &ids, 40, &mut map).unwrap_err();
        assert_eq!(
            err.to_string(),
            "e.parquet: column `c` (user id) holds 18446744073709551615 at row 41 (counting \
             from 0), which does not fit a signed 64-bit integer; store such ids as strings"
        );
    }

    #[test]
    fn a_null_is_reported_at_its_file_row() {
        let mut map = IdMap::new();
        let ids = arc(Int32Array::from(vec![Some(1), Some(2), None]));
        let err = intern_ids(&ctx(), &ids, 100, &mut map).unwrap_err();
        assert_eq!(
            err.to_string(),
            "e.parquet: column `c` (user id) is null at row 102 (counting from 0); drop or fill \
             the rows with nulls"
        );
    }

    #[test]
    fn labels_widen_exactly_and_booleans_count_as_clicks() {
        let l = labels(
            &ctx(),
            &arc(arrow::array::Float32Array::from(vec![0.5, 4.5])),
            0,
        )
        .unwrap();
        assert_eq!(l, [0.5, 4.5]);
        let l = labels(&ctx(), &arc(BooleanArray::from(vec![true, false])), 0).unwrap();
        assert_eq!(l, [1.0, 0.0]);
        let err = labels(&ctx(), &arc(StringArray::from(vec!["5"])), 0).unwrap_err();
        assert!(matches!(err, IoError::ColumnType { .. }), "{err}");
    }

    #[test]
    fn timestamps_of_any_unit_become_seconds_rounded_down() {
        let ms = arc(TimestampMillisecondArray::from(vec![1_500, -1_500, 0]));
        assert_eq!(times(&ctx(), &ms, 0).unwrap(), [1, -2, 0]);
        let ns =
            arc(TimestampNanosecondArray::from(vec![964_982_703_999_999_999]).with_timezone("UTC"));
        assert_eq!(times(&ctx(), &ns, 0).unwrap(), [964_982_703]);
        assert_eq!(
            times(&ctx(), &arc(Int32Array::from(vec![7])), 0).unwrap(),
            [7]
        );
    }

    #[test]
    fn type_checks_name_the_accepted_types() {
        let err = check_time_type(&ctx(), &DataType::Utf8).unwrap_err();
        assert_eq!(
            err.to_string(),
            "e.parquet: column `c` (user id) has type Utf8, but the user id accepts integer \
             seconds (any integer type) or Timestamp (any unit, any time zone); cast the column \
             when writing the file, or map another column"
        );
        assert!(check_id_type(&ctx(), &DataType::Float64).is_err());
        assert!(check_id_type(&ctx(), &DataType::UInt16).is_ok());
        assert!(check_label_type(&ctx(), &DataType::Decimal128(10, 2)).is_ok());
    }
}
