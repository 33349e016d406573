//! PostgreSQL log sequence numbers (`pg_lsn`), printed and parsed as `X/Y`, bound and read as
//! `pg_lsn` values (binary format: the 64-bit position, big-endian).

use std::error::Error;
use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers separated by '/'")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl ToSql for Lsn {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_u64(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::PG_LSN
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Lsn {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 8] =
            raw.try_into().map_err(|_| format!("pg_lsn of {} bytes", raw.len()))?;
        Ok(Lsn(u64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::PG_LSN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_format_is_the_position_big_endian() {
        let lsn = Lsn(0x1_0000_0002);
        let mut out = BytesMut::new();
        assert!(matches!(lsn.to_sql(&Type::PG_LSN, &mut out), Ok(IsNull::No)));
        assert_eq!(&out[..], &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(Lsn::from_sql(&Type::PG_LSN, &out).unwrap(), lsn);
        assert!(Lsn::from_sql(&Type::PG_LSN, &[1, 2, 3]).is_err());
        assert!(<Lsn as ToSql>::accepts(&Type::PG_LSN) && !<Lsn as ToSql>::accepts(&Type::TEXT));
    }

    #[test]
    fn round_trips_through_text() {
        for text in ["0/0", "0/16B3748", "1/0", "FFFFFFFF/FFFFFFFF"] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("1/2".parse::<Lsn>().unwrap(), Lsn(0x1_0000_0002));
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "1", "1/", "/1", "G/1", "1/2/3", "100000000/0"] {
            assert!(text.parse::<Lsn>().is_err(), "{text}");
        }
    }
}
