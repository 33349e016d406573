//! The binary jsonb reader lives in eventstore-core (plain Rust, unit-tested there); only
//! getting the bytes out of a datum needs pgrx.

pub use eventstore_core::jsonb::*;

/// The container of a `jsonb` datum, detoasted if needed (short inline values are read in
/// place). The bytes live in the current memory context.
///
/// # Safety
/// `datum` must be a non-null `jsonb` datum that outlives the returned container.
pub unsafe fn from_datum<'a>(datum: pgrx::pg_sys::Datum) -> Option<Container<'a>> {
    // SAFETY: the caller guarantees a non-null jsonb datum that outlives 'a. The detoasted
    // varlena (the datum itself, or a copy in the current memory context) holds
    // varsize_any_exhdr(v) payload bytes from vardata_any(v), so the slice stays in bounds.
    unsafe {
        let v = pgrx::pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let bytes = std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(v) as *const u8,
            pgrx::varlena::varsize_any_exhdr(v),
        );
        Container::new(bytes)
    }
}
