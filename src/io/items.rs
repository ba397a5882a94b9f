//! Item text: one row per item in a Parquet file, rendered through the pipeline's
//! [template](super::template) into the text the encoder embeds.
//!
//! Column values render as follows: strings verbatim; lists of strings as their elements
//! joined by single spaces (`["Comedy", "Drama"]` -> `Comedy Drama`); integers and floats in
//! their shortest exact decimal form (`4`, `3.5`); booleans as `true`/`false`; a null cell
//! (or null list element) as nothing. Only the id column and the columns the template names
//! are read.
//!
//! Every item in the file is interned into the item [`IdMap`], including items that have no
//! events yet (cold items: their text is all a model knows of them), so
//! `ItemTexts.texts[idx]` lines up with the map. Items known from the events but missing from
//! the file get `None`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericListArray, Int64Builder, ListBuilder,
    RecordBatch, StringArray, StringBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type, Schema, UInt64Type};
use arrow::error::ArrowError;
use parquet::arrow::ProjectionMask;

use super::IoError;
use super::columns::{self, ColumnContext, is_string};
use super::parquet_file::{find_column, guard_decoding, open_parquet, write_parquet_atomic};
use super::template::Template;
use crate::data::{IdMap, ItemTexts};
use crate::plan::params::ItemSource;

/// Writes recsift's item table, `item_id: Int64, title: Utf8, genres: List<Utf8>`, one row
/// per `(id, title, genres)` in order, atomically (what `recsift import` and `recsift gen`
/// write, and the default text template reads).
pub fn write_item_table<T, G>(
    path: &std::path::Path,
    rows: impl IntoIterator<Item = (i64, T, G)>,
) -> Result<(), IoError>
where
    T: AsRef<str>,
    G: IntoIterator,
    G::Item: AsRef<str>,
{
    let mut ids = Int64Builder::new();
    let mut titles = StringBuilder::new();
    let mut genres = ListBuilder::new(StringBuilder::new());
    for (id, title, names) in rows {
        ids.append_value(id);
        titles.append_value(title);
        for name in names {
            genres.values().append_value(name);
        }
        genres.append(true);
    }
    let genres = genres.finish();
    let schema = Schema::new(vec![
        Field::new("item_id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("genres", genres.data_type().clone(), false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(titles.finish()),
        Arc::new(genres),
    ];
    let batch =
        RecordBatch::try_new(Arc::new(schema), columns).map_err(|source| IoError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
    write_parquet_atomic(path, &batch)
}

/// What the file is called in messages.
const WHAT: &str = "items file";
/// The role of a template column in messages.
const TEXT_ROLE: &str = "item text";
/// Types a template column may have, in words.
const TEXT_TYPES: &str = "a string, a list of strings, an integer, a float or Boolean";
/// Rows per batch.
const BATCH_ROWS: usize = 16_384;

/// Reads the item file of `source`, renders each row's text, and interns its item ids into
/// `items` (which may already hold the items of the events).
pub fn read_item_texts(source: &ItemSource, items: &mut IdMap) -> Result<ItemTexts, IoError> {
    guard_decoding(&source.path, || read_unguarded(source, items))
}

fn read_unguarded(source: &ItemSource, items: &mut IdMap) -> Result<ItemTexts, IoError> {
    let path = source.path.as_path();
    let template_error = |source_error| IoError::Template {
        path: path.to_path_buf(),
        template: source.text_template.clone(),
        source: source_error,
    };
    let template = Template::parse(&source.text_template).map_err(template_error)?;
    let builder = open_parquet(path, WHAT)?;
    let schema = Arc::clone(builder.schema());

    let id_index = find_column(path, &schema, &source.id_column, "item id")?;
    let id_ctx = ColumnContext {
        path,
        column: &source.id_column,
        role: "item id",
    };
    columns::check_id_type(&id_ctx, schema.field(id_index).data_type())?;
    template
        .check_columns(schema.fields().iter().map(|f| f.name().as_str()))
        .map_err(template_error)?;
    let mut text_indices = Vec::with_capacity(template.columns().len());
    for name in template.columns() {
        let index = find_column(path, &schema, name, TEXT_ROLE)?;
        let dt = schema.field(index).data_type();
        if !renderable(dt) {
            let ctx = ColumnContext {
                path,
                column: name,
                role: TEXT_ROLE,
            };
            return Err(ctx.type_error(dt, TEXT_TYPES));
        }
        text_indices.push(index);
    }
    if builder.metadata().file_metadata().num_rows() <= 0 {
        return Err(IoError::EmptyFile {
            what: WHAT,
            path: path.to_path_buf(),
        });
    }

    let mut selected: Vec<usize> = std::iter::once(id_index)
        .chain(text_indices.iter().copied())
        .collect();
    selected.sort_unstable();
    selected.dedup();
    let position = |i: usize| selected.iter().filter(|&&s| s < i).count();
    let id_position = position(id_index);
    let text_positions: Vec<usize> = text_indices.iter().map(|&i| position(i)).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), selected.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|source| IoError::NotParquet {
            what: WHAT,
            path: path.to_path_buf(),
            source,
        })?;

    let decode_error = |source| IoError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut texts: Vec<Option<String>> = vec![None; items.len()];
    // File row that defined each item, to report duplicates.
    let mut defined_at: Vec<Option<u64>> = vec![None; items.len()];
    let mut first_row = 0u64;
    for batch in reader {
        let batch = batch.map_err(decode_error)?;
        let ids = columns::intern_ids(&id_ctx, batch.column(id_position), first_row, items)?;
        let cells = text_positions
            .iter()
            .map(|&p| Cells::new(batch.column(p)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(decode_error)?;
        texts.resize(items.len(), None);
        defined_at.resize(items.len(), None);
        for (i, &idx) in ids.iter().enumerate() {
            let row = first_row + i as u64;
            if let Some(first_row) = defined_at[idx as usize] {
                return Err(IoError::DuplicateItem {
                    path: path.to_path_buf(),
                    column: source.id_column.clone(),
                    id: items.raw(idx).to_string(),
                    first_row,
                    row,
                });
            }
            defined_at[idx as usize] = Some(row);
            let mut text = String::new();
            template.render(&mut text, |slot, out| cells[slot].push(i, out));
            texts[idx as usize] = Some(text);
        }
        first_row += batch.num_rows() as u64;
    }
    Ok(ItemTexts { texts })
}

/// Whether a column of type `dt` can appear in a template.
fn renderable(dt: &DataType) -> bool {
    match dt {
        DataType::List(f) | DataType::LargeList(f) => is_string(f.data_type()),
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Boolean => true,
        _ => is_string(dt) || dt.is_integer(),
    }
}

/// One batch of a template column, normalised to a few shapes that render directly.
enum Cells {
    Text(StringArray),
    List(GenericListArray<i32>, StringArray),
    Signed(arrow::array::Int64Array),
    Unsigned(arrow::array::UInt64Array),
    Float32(arrow::array::Float32Array),
    Float64(arrow::array::Float64Array),
    Boolean(BooleanArray),
}

impl Cells {
    fn new(array: &ArrayRef) -> Result<Self, ArrowError> {
        let dt = array.data_type();
        Ok(match dt {
            DataType::List(_) | DataType::LargeList(_) => {
                let as_utf8_list =
                    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
                let list = cast(array, &as_utf8_list)?.as_list::<i32>().clone();
                let values = list.values().as_string::<i32>().clone();
                Cells::List(list, values)
            }
            DataType::Boolean => Cells::Boolean(array.as_boolean().clone()),
            DataType::Float32 => Cells::Float32(array.as_primitive::<Float32Type>().clone()),
            DataType::Float16 | DataType::Float64 => Cells::Float64(
                cast(array, &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            ),
            _ if dt.is_signed_integer() => Cells::Signed(
                cast(array, &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            _ if dt.is_unsigned_integer() => Cells::Unsigned(
                cast(array, &DataType::UInt64)?
                    .as_primitive::<UInt64Type>()
                    .clone(),
            ),
            _ => Cells::Text(columns::to_utf8(array)?),
        })
    }

    /// Appends row `i`'s rendering to `out` (nothing for a null).
    fn push(&self, i: usize, out: &mut String) {
        use std::fmt::Write;
        // Writing into a String cannot fail.
        let _ = match self {
            Cells::Text(a) => {
                out.push_str(if a.is_null(i) { "" } else { a.value(i) });
                Ok(())
            }
            Cells::List(list, values) => {
                if list.is_valid(i) {
                    let offsets = list.value_offsets();
                    let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                    let mut first = true;
                    for v in start..end {
                        if values.is_valid(v) {
                            if !first {
                                out.push(' ');
                            }
                            out.push_str(values.value(v));
                            first = false;
                        }
                    }
                }
                Ok(())
            }
            Cells::Signed(a) if a.is_valid(i) => write!(out, "{}", a.value(i)),
            Cells::Unsigned(a) if a.is_valid(i) => write!(out, "{}", a.value(i)),
            Cells::Float32(a) if a.is_valid(i) => write!(out, "{}", a.value(i)),
            Cells::Float64(a) if a.is_valid(i) => write!(out, "{}", a.value(i)),
            Cells::Boolean(a) if a.is_valid(i) => write!(out, "{}", a.value(i)),
            _ => Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use arrow::array::{
        Float32Array, Int32Array, Int64Array, LargeListBuilder, LargeStringBuilder, ListBuilder,
        RecordBatch, StringBuilder, UInt8Array,
    };

    use super::*;
    use crate::data::RawId;
    use crate::io::parquet_file::write_parquet_atomic;

    fn write(dir: &Path, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
        let path = dir.join("items.parquet");
        write_parquet_atomic(&path, &RecordBatch::try_from_iter(columns).unwrap()).unwrap();
        path
    }

    fn source(path: &Path, template: &str) -> ItemSource {
        ItemSource {
            path: path.to_path_buf(),
            id_column: "item_id".into(),
            text_template: template.into(),
        }
    }

    fn genres(rows: &[Option<&[Option<&str>]>]) -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for row in rows {
            match row {
                Some(values) => {
                    for v in *values {
                        b.values().append_option(*v);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    }

    fn movies(dir: &Path) -> PathBuf {
        write(
            dir,
            vec![
                (
                    "item_id",
                    Arc::new(Int64Array::from(vec![10, 20, 30])) as ArrayRef,
                ),
                (
                    "title",
                    Arc::new(StringArray::from(vec![
                        Some("Heat (1995)"),
                        None,
                        Some("Up, \"Up\""),
                    ])),
                ),
                (
                    "genres",
                    genres(&[
                        Some(&[Some("Action"), Some("Crime")]),
                        Some(&[Some("(no genres listed)")]),
                        None,
                    ]),
                ),
                (
                    "year",
                    Arc::new(Int32Array::from(vec![Some(1995), Some(2001), None])),
                ),
                ("score", Arc::new(Float32Array::from(vec![3.5, 0.1, 4.0]))),
                ("age", Arc::new(UInt8Array::from(vec![7, 8, 9]))),
            ],
        )
    }

    #[test]
    fn renders_every_column_kind_and_lines_up_with_the_item_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = movies(dir.path());
        let mut items = IdMap::new();
        items.intern(RawId::Int(30)); // seen in the events
        items.intern(RawId::Int(99)); // seen in the events, no text
        let texts = read_item_texts(
            &source(&path, "{title} | {genres} ({year}) {{{score}}} {age}"),
            &mut items,
        )
        .unwrap();
        assert_eq!(items.len(), 4, "cold items 10 and 20 are interned too");
        assert_eq!(items.get(&RawId::Int(10)), Some(2));
        assert_eq!(
            texts.texts,
            [
                Some("Up, \"Up\" |  () {4} 9".to_string()),
                None,
                Some("Heat (1995) | Action Crime (1995) {3.5} 7".to_string()),
                Some(" | (no genres listed) (2001) {0.1} 8".to_string()),
            ]
        );
    }

    #[test]
    fn large_lists_and_large_strings_render_like_lists_and_strings() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = LargeListBuilder::new(LargeStringBuilder::new());
        b.values().append_value("Drama");
        b.values().append_null();
        b.values().append_value("War");
        b.append(true);
        let path = write(
            dir.path(),
            vec![
                (
                    "item_id",
                    Arc::new(StringArray::from(vec!["m1"])) as ArrayRef,
                ),
                ("genres", Arc::new(b.finish())),
            ],
        );
        let mut items = IdMap::new();
        let texts = read_item_texts(&source(&path, "<{genres}>"), &mut items).unwrap();
        assert_eq!(texts.texts, [Some("<Drama War>".to_string())]);
        assert_eq!(items.raw(0), &RawId::Str("m1".into()));
    }

    #[test]
    fn an_unknown_template_column_suggests_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = movies(dir.path());
        let err =
            read_item_texts(&source(&path, "{title} | {genre}"), &mut IdMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: item text template \"{{title}} | {{genre}}\": no column `genre` (did you \
                 mean `genres`?); columns present: item_id, title, genres, year, score, age",
                path.display()
            )
        );
    }

    #[test]
    fn a_bad_template_is_reported_before_the_file_is_opened() {
        let err = read_item_texts(
            &source(Path::new("/no/such.parquet"), "{title"),
            &mut IdMap::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/no/such.parquet: item text template \"{title\": `{` at character 1 is never \
             closed; end the placeholder with `}`, or write `{{` for a literal brace"
        );
    }

    #[test]
    fn duplicate_items_and_unrenderable_columns_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            vec![
                (
                    "item_id",
                    Arc::new(Int64Array::from(vec![1, 2, 1])) as ArrayRef,
                ),
                ("title", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
                (
                    "blob",
                    Arc::new(arrow::array::BinaryArray::from(vec![&b"x"[..]; 3])),
                ),
            ],
        );
        let err = read_item_texts(&source(&path, "{title}"), &mut IdMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: item `1` appears twice in column `item_id` (rows 0 and 2, counting from 0); \
                 keep one row per item",
                path.display()
            )
        );
        let err = read_item_texts(&source(&path, "{blob}"), &mut IdMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: column `blob` (item text) has type Binary, but the item text accepts a \
                 string, a list of strings, an integer, a float or Boolean; cast the column \
                 when writing the file, or map another column",
                path.display()
            )
        );
    }
}
