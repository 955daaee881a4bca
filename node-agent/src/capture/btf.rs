//! Just enough of a BTF reader to find where a struct member sits in the running kernel.
//!
//! aya-ebpf programs have no CO-RE field relocations, so the few kernel struct fields the
//! programs read are located here, at load time, in `/sys/kernel/btf/vmlinux`, and passed
//! to the programs as constants. The format is the kernel's `include/uapi/linux/btf.h`:
//! a header, then a section of variable-length type records (ids counting from 1), then
//! a string section.

use std::collections::HashMap;

/// Why a member could not be located.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("not a BTF blob: {0}")]
    Malformed(&'static str),
    #[error("struct {0} is not in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {0} has no member {1} in the kernel's BTF")]
    NoMember(String, String),
    #[error("{0} is a bit field, which the programs cannot read")]
    BitField(String),
    #[error("{path} is {actual} bytes in this kernel, the programs read {expected}")]
    Size {
        path: String,
        actual: u32,
        expected: u32,
    },
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One struct or union member.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Offset in bits from the start of the enclosing type.
    bit_offset: u32,
    /// Non-zero for a bit field.
    bitfield_size: u32,
}

/// One type record, reduced to what member lookup needs.
#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name_off: u32,
    /// `size` for INT, STRUCT, UNION, ENUM, FLOAT; `type` for PTR, TYPEDEF and modifiers.
    size_or_type: u32,
    /// ARRAY: (element type, element count).
    array: Option<(u32, u32)>,
    members: Vec<Member>,
}

/// Parsed kernel BTF.
pub struct Btf {
    /// `types[id - 1]`.
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Struct name → type id, for structs with a body (not forward declarations).
    structs: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Parses a little-endian BTF blob such as `/sys/kernel/btf/vmlinux`.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let type_section = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut types = Vec::new();
        let mut at = 0;
        while at < type_section.len() {
            let name_off = u32_at(type_section, at)?;
            let info = u32_at(type_section, at + 4)?;
            let size_or_type = u32_at(type_section, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut ty = Type {
                kind,
                name_off,
                size_or_type,
                array: None,
                members: Vec::new(),
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => {
                    ty.array = Some((u32_at(type_section, at)?, u32_at(type_section, at + 8)?));
                    at += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(type_section, at + 8)?;
                        ty.members.push(Member {
                            name_off: u32_at(type_section, at)?,
                            type_id: u32_at(type_section, at + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                            bitfield_size: if kind_flag { offset >> 24 } else { 0 },
                        });
                        at += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => at += 12 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                _ => return Err(BtfError::Malformed("unknown type kind")),
            }
            types.push(ty);
        }

        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
        };
        let mut structs = HashMap::new();
        for (index, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name_off != 0 {
                structs
                    .entry(btf.name(ty.name_off).to_owned())
                    .or_insert(index as u32 + 1);
            }
        }
        btf.structs = structs;
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or_default()
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// Follows typedefs and qualifiers to the type that has a layout.
    fn resolve(&self, mut id: u32) -> Option<(u32, &Type)> {
        for _ in 0..32 {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some((id, ty)),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let (_, ty) = self.resolve(id)?;
        match ty.kind {
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let (elem, count) = ty.array?;
                Some(self.size_of(elem)? * count)
            }
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(ty.size_or_type)
            }
            _ => None,
        }
    }

    /// Finds `name` among the members of the struct or union `id`, looking inside anonymous
    /// struct and union members too (as C does). Returns (bit offset, member).
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, Member)> {
        let (_, ty) = self.resolve(id)?;
        if depth > 8 || !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for member in &ty.members {
            if member.name_off != 0 {
                if self.name(member.name_off) == name {
                    return Some((member.bit_offset, *member));
                }
            } else if let Some((inner, found)) = self.find_member(member.type_id, name, depth + 1) {
                return Some((member.bit_offset + inner, found));
            }
        }
        None
    }

    /// Size in bytes of the struct `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        self.size_of(id)
            .ok_or(BtfError::Malformed("a struct without a size"))
    }

    /// Byte offset of `path` (e.g. `["sk_cgrp_data", "cgroup"]`) inside struct `name`,
    /// checking that the last member is `expected_size` bytes and not a bit field.
    pub fn offset_of(
        &self,
        name: &str,
        path: &[&str],
        expected_size: u32,
    ) -> Result<u32, BtfError> {
        let full = format!("{name}.{}", path.join("."));
        let mut id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        let mut bits = 0;
        let mut last = None;
        for (depth, member_name) in path.iter().enumerate() {
            let (offset, member) = self.find_member(id, member_name, 0).ok_or_else(|| {
                BtfError::NoMember(
                    format!("{name}.{}", path[..depth].join("."))
                        .trim_end_matches('.')
                        .to_owned(),
                    (*member_name).to_owned(),
                )
            })?;
            bits += offset;
            id = member.type_id;
            last = Some(member);
        }
        let member = last.ok_or(BtfError::Malformed("empty member path"))?;
        if member.bitfield_size != 0 || bits % 8 != 0 {
            return Err(BtfError::BitField(full));
        }
        let actual = self.size_of(member.type_id).unwrap_or(0);
        if actual != expected_size {
            return Err(BtfError::Size {
                path: full,
                actual,
                expected: expected_size,
            });
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: `struct outer { int a; union { struct { long b; }; }; int *p; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0long\0outer\0a\0b\0p\0".to_vec();
        let (int, long, outer, a, b, p) = (1u32, 5, 10, 16, 18, 20);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (4 bytes)
        push(&[int, KIND_INT << 24, 4, 32]);
        // 2: long (8 bytes)
        push(&[long, KIND_INT << 24, 8, 64]);
        // 3: anonymous struct { long b; }
        push(&[0, KIND_STRUCT << 24 | 1, 8, b, 2, 0]);
        // 4: anonymous union { struct 3; }
        push(&[0, KIND_UNION << 24 | 1, 8, 0, 3, 0]);
        // 5: int *
        push(&[0, KIND_PTR << 24, 1]);
        // 6: struct outer { int a @0; union 4 @64 bits; int *p @128 bits }
        push(&[
            outer,
            KIND_STRUCT << 24 | 3,
            24,
            a,
            1,
            0,
            0,
            4,
            64,
            p,
            5,
            128,
        ]);
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_members_through_anonymous_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset_of("outer", &["a"], 4).unwrap(), 0);
        assert_eq!(btf.offset_of("outer", &["b"], 8).unwrap(), 8);
        assert_eq!(btf.offset_of("outer", &["p"], 8).unwrap(), 16);
    }

    #[test]
    fn reports_what_is_missing_or_different() {
        let btf = Btf::parse(&blob()).unwrap();
        assert!(matches!(
            btf.offset_of("inner", &["a"], 4),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            btf.offset_of("outer", &["z"], 4),
            Err(BtfError::NoMember(..))
        ));
        let err = btf.offset_of("outer", &["a"], 8).unwrap_err();
        assert_eq!(
            err.to_string(),
            "outer.a is 4 bytes in this kernel, the programs read 8"
        );
        assert!(Btf::parse(b"not btf at all, really not").is_err());
    }
}
