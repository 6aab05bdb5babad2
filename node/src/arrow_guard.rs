//! A fence around Arrow's IPC schema decoder.
//!
//! arrow-ipc 59 (the release the query engine is built on) turns a flatbuffer schema into an
//! Arrow schema with `unwrap`s and `panic!`s on what it does not expect: a field without a
//! type, an unknown type, a list without a child, a big-endian decimal. Those bytes come from
//! peers (the schema message of a transfer) and from files (a product an operator publishes,
//! a received file being converted), so every reader construction over them goes through
//! [`contain`], which turns such a panic into an ordinary [`ArrowError`]: the transfer or the
//! publish is refused with a message and the daemon goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow::error::ArrowError;

/// Runs `decode`, turning a panic inside Arrow into [`ArrowError::IpcError`].
pub(crate) fn contain<T>(decode: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, ArrowError> {
    catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no detail".to_owned());
        Err(ArrowError::IpcError(format!(
            "malformed Arrow IPC schema ({why})"
        )))
    })
}

#[cfg(test)]
mod tests {
    use arrow::ipc::convert::fb_to_schema;
    use arrow::ipc::{FieldBuilder, IntBuilder, SchemaBuilder, Type, root_as_schema};
    use flatbuffers::FlatBufferBuilder;

    use super::*;

    /// A valid flatbuffer schema whose one field is a 7-bit integer.
    fn seven_bit_schema() -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let int = {
            let mut b = IntBuilder::new(&mut fbb);
            b.add_bitWidth(7);
            b.add_is_signed(true);
            b.finish()
        };
        let name = fbb.create_string("a");
        let field = {
            let mut b = FieldBuilder::new(&mut fbb);
            b.add_name(name);
            b.add_type_type(Type::Int);
            b.add_type_(int.as_union_value());
            b.add_nullable(true);
            b.finish()
        };
        let fields = fbb.create_vector(&[field]);
        let schema = {
            let mut b = SchemaBuilder::new(&mut fbb);
            b.add_fields(fields);
            b.finish()
        };
        fbb.finish(schema, None);
        fbb.finished_data().to_vec()
    }

    #[test]
    fn a_decoder_panic_becomes_an_error() {
        let bytes = seven_bit_schema();
        let fb = root_as_schema(&bytes).expect("the flatbuffer itself is well formed");
        let err = contain(|| Ok(fb_to_schema(fb))).unwrap_err();
        assert!(
            err.to_string().contains("malformed Arrow IPC schema"),
            "{err}"
        );
        assert!(err.to_string().contains("bit width of 7"), "{err}");
    }

    #[test]
    fn a_result_passes_through() {
        assert_eq!(contain(|| Ok(7)).unwrap(), 7);
        let err = contain::<()>(|| Err(ArrowError::IpcError("short".into()))).unwrap_err();
        assert_eq!(err.to_string(), "Ipc error: short");
    }
}
