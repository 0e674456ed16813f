//! What the closure check needs from one ELF file, read with the `object`
//! crate: lazily through a read cache, so a 100 MB server binary costs a few
//! small reads (goblin would load and parse the whole file), and with typed
//! access to the dynamic table and the GNU version sections.

use super::view::Data;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::read::{ReadCache, ReadRef};
use object::{Endianness, FileKind};
use std::fs::File;
use std::io::Read;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    pub class64: bool,
    pub machine: u16,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let machine = match self.machine {
            3 => "i386".to_string(),
            40 => "arm".to_string(),
            62 => "x86-64".to_string(),
            183 => "aarch64".to_string(),
            m => format!("machine {m}"),
        };
        write!(f, "ELF{} {machine}", if self.class64 { 64 } else { 32 })
    }
}

/// A `DT_VERNEED` entry: versions needed from one library.
#[derive(Debug, Clone)]
pub struct Verneed {
    pub file: String,
    /// Version names, each with whether it is weak (the loader then only
    /// warns when it is missing).
    pub versions: Vec<(String, bool)>,
}

#[derive(Debug, Clone)]
pub struct ElfInfo {
    pub kind: Kind,
    pub interp: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Option<String>,
    pub runpath: Option<String>,
    pub verneed: Vec<Verneed>,
    /// Version names defined (`DT_VERDEF`), or None if the file has none (the
    /// loader then accepts any version needed from it).
    pub verdef: Option<Vec<String>>,
}

/// Whether a file starts with the ELF magic.
pub fn is_elf(data: &Data) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    match data {
        Data::Inline(b) => Ok(b.starts_with(&elf::ELFMAG)),
        Data::Disk(p) => {
            let mut f = File::open(p)?;
            let mut n = 0;
            while n < 4 {
                match f.read(&mut magic[n..])? {
                    0 => return Ok(false),
                    k => n += k,
                }
            }
            Ok(magic == elf::ELFMAG)
        }
    }
}

/// Reads an ELF file. None for files the loader never maps as programs or
/// libraries: relocatable objects, core files, and separate debug files
/// (whose sections hold no data).
pub fn read(data: &Data) -> anyhow::Result<Option<ElfInfo>> {
    match data {
        Data::Inline(b) => read_from(b.as_slice()),
        Data::Disk(p) => read_from(&ReadCache::new(File::open(p)?)),
    }
}

fn read_from<'data, R: ReadRef<'data>>(data: R) -> anyhow::Result<Option<ElfInfo>> {
    Ok(match FileKind::parse(data)? {
        FileKind::Elf32 => read_elf::<elf::FileHeader32<Endianness>, R>(data)?,
        FileKind::Elf64 => read_elf::<elf::FileHeader64<Endianness>, R>(data)?,
        other => anyhow::bail!("starts with the ELF magic but reads as {other:?}"),
    })
}

fn read_elf<'data, Elf, R>(data: R) -> anyhow::Result<Option<ElfInfo>>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let e_type = header.e_type(endian);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Ok(None);
    }
    let sections = header.sections(endian, data)?;
    let debug_only = sections
        .section_by_name(endian, b".text")
        .is_some_and(|(_, s)| s.sh_type(endian) == elf::SHT_NOBITS);
    if debug_only {
        return Ok(None);
    }
    let mut interp = None;
    let mut has_dynamic = false;
    for ph in header.program_headers(endian, data)? {
        if let Some(i) = ph.interpreter(endian, data)? {
            interp = Some(text(i));
        }
        has_dynamic |= ph.p_type(endian) == elf::PT_DYNAMIC;
    }
    let mut info = ElfInfo {
        kind: Kind {
            class64: header.is_class_64(),
            machine: header.e_machine(endian).0,
        },
        interp,
        needed: Vec::new(),
        rpath: None,
        runpath: None,
        verneed: Vec::new(),
        verdef: None,
    };
    let table = sections.dynamic_table(endian, data)?;
    if table.is_empty() && has_dynamic {
        anyhow::bail!(
            "has a dynamic segment but no section headers for it; mpsi reads the dynamic table through its section"
        );
    }
    for d in &table {
        let value = || table.string(d).map(text);
        match d.tag {
            elf::DT_NEEDED => info.needed.push(value()?),
            elf::DT_RPATH => info.rpath = Some(value()?),
            elf::DT_RUNPATH => info.runpath = Some(value()?),
            _ => {}
        }
    }
    if let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        while let Some((need, mut aux)) = needs.next()? {
            let mut versions = Vec::new();
            while let Some(a) = aux.next()? {
                let weak = a.vna_flags.get(endian).0 & elf::VER_FLG_WEAK.0 != 0;
                versions.push((text(a.name(endian, strings)?), weak));
            }
            info.verneed.push(Verneed {
                file: text(need.file(endian, strings)?),
                versions,
            });
        }
    }
    if let Some((mut defs, link)) = sections.gnu_verdef(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        let mut names = Vec::new();
        while let Some((def, mut aux)) = defs.next()? {
            // The first auxiliary entry names the version; the base entry
            // names the file itself.
            let base = def.vd_flags.get(endian).0 & elf::VER_FLG_BASE.0 != 0;
            if let (false, Some(a)) = (base, aux.next()?) {
                names.push(text(a.name(endian, strings)?));
            }
        }
        info.verdef = Some(names);
    }
    Ok(Some(info))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
