//! JSON rows for `meshnode sql --json`: arrow's JSON writer, with encoders of our own where
//! it writes something other than the value.
//!
//! - NaN and the infinities, which JSON has no number for, are the strings `"NaN"`,
//!   `"Infinity"` and `"-Infinity"` (the writer writes `null`, like SQL NULL).
//! - A dictionary's row whose value is null is `null` (the writer encodes the null slot of
//!   the values: `""` for text).
//! - A decimal of negative scale is its integer (the writer prints `0` as `000`, which is not
//!   JSON).

use std::io::Write;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type, FieldRef, Float16Type,
    Float32Type, Float64Type,
};
use arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};

/// The JSON rows writer of `--json`: an array of objects, nulls written out, and NaN and the
/// infinities, which JSON has no number for, as the strings `"NaN"`, `"Infinity"` and
/// `"-Infinity"`, so that they stay apart from null: the spellings DuckDB and Python's `json`
/// write bare (which strict parsers refuse), quoted as the JSON mapping of Protocol Buffers
/// quotes them.
pub(crate) fn json_writer<W: Write>(
    out: W,
) -> arrow::json::Writer<W, arrow::json::writer::JsonArray> {
    arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_encoder_factory(Arc::new(RowEncoders))
        .build(out)
}

/// The encoders of this module, at any depth; the writer's own for everything else.
#[derive(Debug)]
struct RowEncoders;

/// Encoder options without [`RowEncoders`]: the writer's own encoders.
static PLAIN_JSON: LazyLock<EncoderOptions> = LazyLock::new(EncoderOptions::default);

impl EncoderFactory for RowEncoders {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, arrow::error::ArrowError> {
        let value: Box<dyn Fn(usize) -> f64 + 'a> = match array.data_type() {
            DataType::Float16 => {
                let values = array.as_primitive::<Float16Type>();
                Box::new(move |i| values.value(i).to_f64())
            }
            DataType::Float32 => {
                let values = array.as_primitive::<Float32Type>();
                Box::new(move |i| f64::from(values.value(i)))
            }
            DataType::Float64 => {
                let values = array.as_primitive::<Float64Type>();
                Box::new(move |i| values.value(i))
            }
            DataType::Dictionary(..) => {
                let Some(dictionary) = array.as_any_dictionary_opt() else {
                    return Ok(None);
                };
                // The values' encoders are this factory's too (a dictionary of floats).
                let values = arrow::json::writer::make_encoder(
                    field,
                    dictionary.values().as_ref(),
                    options,
                )?;
                return Ok(Some(NullableEncoder::new(
                    Box::new(DictionaryEncoder {
                        keys: dictionary.normalized_keys(),
                        values,
                    }),
                    // Null where the key is, and where the value it points at is.
                    array.logical_nulls(),
                )));
            }
            DataType::Decimal32(_, scale)
            | DataType::Decimal64(_, scale)
            | DataType::Decimal128(_, scale)
            | DataType::Decimal256(_, scale)
                if *scale < 0 =>
            {
                let digits: Box<dyn Fn(usize) -> String + 'a> = match array.data_type() {
                    DataType::Decimal32(..) => {
                        let v = array.as_primitive::<Decimal32Type>();
                        Box::new(move |i| v.value(i).to_string())
                    }
                    DataType::Decimal64(..) => {
                        let v = array.as_primitive::<Decimal64Type>();
                        Box::new(move |i| v.value(i).to_string())
                    }
                    DataType::Decimal128(..) => {
                        let v = array.as_primitive::<Decimal128Type>();
                        Box::new(move |i| v.value(i).to_string())
                    }
                    _ => {
                        let v = array.as_primitive::<Decimal256Type>();
                        Box::new(move |i| v.value(i).to_string())
                    }
                };
                return Ok(Some(NullableEncoder::new(
                    Box::new(NegativeScaleEncoder {
                        digits,
                        zeros: usize::from(scale.unsigned_abs()),
                    }),
                    array.nulls().cloned(),
                )));
            }
            _ => return Ok(None),
        };
        let finite = arrow::json::writer::make_encoder(field, array, &PLAIN_JSON)?;
        Ok(Some(NullableEncoder::new(
            Box::new(NonFiniteEncoder { value, finite }),
            array.nulls().cloned(),
        )))
    }
}

/// A float column: NaN and the infinities as strings, finite values as the writer writes them.
struct NonFiniteEncoder<'a> {
    /// The value at a row, widened.
    value: Box<dyn Fn(usize) -> f64 + 'a>,
    /// The writer's own encoder, for finite values.
    finite: NullableEncoder<'a>,
}

impl Encoder for NonFiniteEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let value = (self.value)(idx);
        if value.is_nan() {
            out.extend_from_slice(b"\"NaN\"");
        } else if value == f64::INFINITY {
            out.extend_from_slice(b"\"Infinity\"");
        } else if value == f64::NEG_INFINITY {
            out.extend_from_slice(b"\"-Infinity\"");
        } else {
            self.finite.encode(idx, out);
        }
    }
}

/// A dictionary column: each row the value its key points at (rows whose key or value is
/// null never reach it: the writer asks the logical nulls first).
struct DictionaryEncoder<'a> {
    /// Each row's index into the values.
    keys: Vec<usize>,
    /// The values' encoder.
    values: NullableEncoder<'a>,
}

impl Encoder for DictionaryEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        self.values.encode(self.keys[idx], out);
    }
}

/// A decimal of negative scale: its unscaled integer followed by `zeros` zeros, or `0`.
struct NegativeScaleEncoder<'a> {
    /// The unscaled integer at a row, in decimal digits.
    digits: Box<dyn Fn(usize) -> String + 'a>,
    /// Minus the scale.
    zeros: usize,
}

impl Encoder for NegativeScaleEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let digits = (self.digits)(idx);
        out.extend_from_slice(digits.as_bytes());
        if digits != "0" {
            out.extend(std::iter::repeat_n(b'0', self.zeros));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Decimal128Array, DictionaryArray, Float64Array, Int32Array, ListArray,
        RecordBatch, StringArray,
    };
    use arrow::datatypes::Int8Type;

    use super::*;

    fn json_of(batch: &RecordBatch) -> String {
        let mut writer = json_writer(Vec::new());
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        String::from_utf8(writer.into_inner()).unwrap()
    }

    #[test]
    fn json_writes_nan_and_the_infinities_as_strings_at_any_depth_and_null_as_null() {
        use arrow::array::{Float32Array, Float64Array, ListArray};

        let special = [
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            None,
            Some(-0.5),
        ];
        let f64s = Float64Array::from(special.to_vec());
        let f32s = Float32Array::from(special.map(|v| v.map(|v| v as f32)).to_vec());
        let f16s = arrow::compute::cast(&f64s, &DataType::Float16).unwrap();
        let lists = ListArray::from_iter_primitive::<Float64Type, _, _>(
            special.map(|v| Some(vec![v, Some(2.0)])),
        );
        let batch = RecordBatch::try_from_iter([
            ("d", Arc::new(f64s) as arrow::array::ArrayRef),
            ("f", Arc::new(f32s)),
            ("h", f16s),
            ("l", Arc::new(lists)),
        ])
        .unwrap();
        let rows: serde_json::Value = serde_json::from_str(&json_of(&batch)).unwrap();
        let expected = ["\"NaN\"", "\"Infinity\"", "\"-Infinity\"", "null", "-0.5"];
        for (row, value) in expected.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(value).unwrap();
            let want = serde_json::json!({
                "d": value, "f": value, "h": value, "l": [value, 2.0]
            });
            assert_eq!(rows[row], want, "row {row}");
        }
    }

    #[test]
    fn json_writes_finite_floats_as_the_plain_writer_does() {
        use arrow::array::{Float32Array, Float64Array};

        let batch = RecordBatch::try_from_iter([
            (
                "d",
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    Some(-0.0),
                    Some(1e300),
                    Some(f64::MIN_POSITIVE),
                    Some(0.1),
                    None,
                ])) as arrow::array::ArrayRef,
            ),
            (
                "f",
                Arc::new(Float32Array::from(vec![
                    Some(1.0),
                    Some(-0.0),
                    Some(3e38),
                    Some(f32::MIN_POSITIVE),
                    Some(0.1),
                    None,
                ])),
            ),
        ])
        .unwrap();
        let mut plain = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(Vec::new());
        plain.write(&batch).unwrap();
        plain.finish().unwrap();
        assert_eq!(
            json_of(&batch),
            String::from_utf8(plain.into_inner()).unwrap()
        );
    }

    #[test]
    fn a_dictionary_row_whose_value_is_null_is_null() {
        let values = StringArray::from(vec![Some("EU"), None, Some("")]);
        let keys = Int32Array::from(vec![Some(0), Some(1), None, Some(2), Some(0)]);
        let dictionary = DictionaryArray::new(keys, Arc::new(values));
        let floats = DictionaryArray::<Int8Type>::new(
            vec![Some(0), Some(1), None, Some(0), Some(1)].into(),
            Arc::new(Float64Array::from(vec![f64::NAN, 1.5])),
        );
        let batch = RecordBatch::try_from_iter([
            ("region", Arc::new(dictionary) as ArrayRef),
            ("f", Arc::new(floats)),
        ])
        .unwrap();
        let rows: serde_json::Value = serde_json::from_str(&json_of(&batch)).unwrap();
        assert_eq!(
            rows,
            serde_json::json!([
                {"region": "EU", "f": "NaN"},
                {"region": null, "f": 1.5},
                {"region": null, "f": null},
                {"region": "", "f": "NaN"},
                {"region": "EU", "f": 1.5},
            ])
        );
    }

    #[test]
    fn a_negative_scale_decimal_is_its_integer() {
        let decimals = Decimal128Array::from(vec![Some(1), Some(0), None, Some(-3), Some(12)])
            .with_precision_and_scale(5, -2)
            .unwrap();
        let positive = Decimal128Array::from(vec![Some(1), Some(0), None, Some(-3), Some(12)])
            .with_precision_and_scale(5, 2)
            .unwrap();
        let lists = ListArray::from_iter_primitive::<Decimal128Type, _, _>([
            Some(vec![Some(5), None]),
            None,
            Some(vec![]),
            Some(vec![Some(0)]),
            Some(vec![Some(-1)]),
        ]);
        let item = Arc::new(arrow::datatypes::Field::new(
            "item",
            DataType::Decimal128(5, -3),
            true,
        ));
        let lists = ListArray::new(
            item,
            lists.offsets().clone(),
            Arc::new(
                lists
                    .values()
                    .as_primitive::<Decimal128Type>()
                    .clone()
                    .with_precision_and_scale(5, -3)
                    .unwrap(),
            ),
            lists.nulls().cloned(),
        );
        let batch = RecordBatch::try_from_iter([
            ("d", Arc::new(decimals) as ArrayRef),
            ("p", Arc::new(positive)),
            ("l", Arc::new(lists)),
        ])
        .unwrap();
        let text = json_of(&batch);
        let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            rows,
            serde_json::json!([
                {"d": 100, "p": 0.01, "l": [5000, null]},
                {"d": 0, "p": 0.00, "l": null},
                {"d": null, "p": null, "l": []},
                {"d": -300, "p": -0.03, "l": [0]},
                {"d": 1200, "p": 0.12, "l": [-1000]},
            ])
        );
        // The digits as written: a number's, not `000`.
        assert!(text.contains("\"d\":0,"), "{text}");
        assert!(text.contains("\"p\":0.00,"), "{text}");
    }
}
