//! Protobuf's wire format read field by field from one slice, for the
//! messages vecmem reads by hand (requests with vectors, Qdrant's answers
//! with points). Anything it does not accept (a truncated field, a varint
//! of more than ten bytes, a field number of 0 or above 2^32, a group, a
//! wire type protobuf does not define) ends the reading, and the callers
//! then hand the bytes to prost whole, so errors are always prost's.

/// A field's value as its wire type carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// One field: its number, its value, and its bytes as sent (key included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Wire<'a>,
    pub raw: &'a [u8],
}

impl<'a> From<Field<'a>> for (u32, Wire<'a>) {
    /// The number and value, to match on.
    fn from(field: Field<'a>) -> Self {
        (field.number, field.value)
    }
}

/// The fields of a message's bytes, in wire order; `None` where the bytes
/// stop being fields, and nothing after it.
pub fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields { rest: bytes }
}

pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<Field<'a>>;

    #[inline(always)]
    fn next(&mut self) -> Option<Option<Field<'a>>> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_none() {
            self.rest = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    #[inline(always)]
    fn field(&mut self) -> Option<Field<'a>> {
        let start = self.rest;
        let key = read_varint(&mut self.rest)?;
        let number = u32::try_from(key >> 3).ok().filter(|&number| number > 0)?;
        let value = match key & 7 {
            0 => Wire::Varint(read_varint(&mut self.rest)?),
            1 => Wire::Fixed64(u64::from_le_bytes(take_array(&mut self.rest)?)),
            2 => {
                let len = usize::try_from(read_varint(&mut self.rest)?).ok()?;
                Wire::Len(take(&mut self.rest, len)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(take_array(&mut self.rest)?)),
            // Groups, and wire types protobuf does not define.
            _ => return None,
        };
        Some(Field {
            number,
            value,
            raw: &start[..start.len() - self.rest.len()],
        })
    }
}

/// The next `len` bytes, or `None` if there are fewer.
#[inline(always)]
fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (taken, rest) = bytes.split_at_checked(len)?;
    *bytes = rest;
    Some(taken)
}

#[inline(always)]
fn take_array<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    take(bytes, N)?.try_into().ok()
}

/// A base-128 varint of at most ten bytes, as protobuf writes them; the
/// tenth holds the 64th bit only (prost refuses more).
#[inline(always)]
fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    // Keys, lengths under 128 and small numbers: most varints.
    if let Some((&byte, rest)) = bytes.split_first()
        && byte < 0x80
    {
        *bytes = rest;
        return Some(u64::from(byte));
    }
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(10).enumerate() {
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Vec<Option<(u32, Wire<'_>)>> {
        fields(bytes)
            .map(|field| field.map(|field| (field.number, field.value)))
            .collect()
    }

    #[test]
    fn each_wire_type_is_read_with_its_bytes() {
        let bytes = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 0, 0, 0, 0, 0, 0, 0, // 2: fixed64 1
            0x1a, 2, b'h', b'i', // 3: "hi"
            0x25, 0, 0, 0x80, 0x3f, // 4: fixed32 1.0f
        ];
        assert_eq!(
            read(&bytes),
            [
                Some((1, Wire::Varint(150))),
                Some((2, Wire::Fixed64(1))),
                Some((3, Wire::Len(b"hi"))),
                Some((4, Wire::Fixed32(1.0_f32.to_bits()))),
            ]
        );
        let raw: Vec<&[u8]> = fields(&bytes)
            .map(|f| f.map_or(&[][..], |f| f.raw))
            .collect();
        assert_eq!(raw.concat(), bytes);
    }

    #[test]
    fn what_is_not_a_field_ends_the_reading() {
        for bytes in [
            &[0x08][..],            // a varint cut short
            &[0x1a, 3, b'h', b'i'], // a length past the end
            &[0x00, 1],             // field number 0
            &[0x0b, 0x0c],          // a group
            &[0x0e, 1],             // wire type 6
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ], // 11 bytes
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ], // past 64 bits
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 1], // field number 2^32
        ] {
            assert_eq!(read(bytes).last(), Some(&None), "{bytes:?}");
        }
        assert_eq!(read(&[0x08, 1, 0x00]), [Some((1, Wire::Varint(1))), None]);
    }
}
