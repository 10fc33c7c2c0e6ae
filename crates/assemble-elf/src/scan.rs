//! Reading what autoPatchelf needs from an ELF file.

use goblin::elf::Elf;
use goblin::elf::header::{ET_DYN, ET_EXEC};
use goblin::elf::section_header::SHT_NOBITS;
use serde::{Deserialize, Serialize};

/// What a library must match to satisfy a consumer: a 32-bit library never
/// satisfies a 64-bit one, nor an aarch64 one an x86-64 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Arch {
    /// 32 or 64.
    pub bits: u8,
    /// `e_machine`.
    pub machine: u16,
    /// `EI_OSABI`; SYSV (0) and GNU/Linux (3) are interchangeable.
    pub osabi: u8,
}

impl Arch {
    /// Whether a library of arch `self` can satisfy a consumer of arch `of`.
    pub fn satisfies(&self, of: &Arch) -> bool {
        let linuxish = |a: u8| a == 0 || a == 3;
        self.bits == of.bits
            && self.machine == of.machine
            && (self.osabi == of.osabi || (linuxish(self.osabi) && linuxish(of.osabi)))
    }
}

/// The dynamic-linking facts of one ELF file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElfInfo {
    pub arch: Arch,
    /// An executable (has an interpreter), as opposed to a library.
    pub executable: bool,
    pub interp: Option<String>,
    pub needed: Vec<String>,
    /// DT_RUNPATH, else DT_RPATH.
    pub runpath: Option<String>,
    pub soname: Option<String>,
}

/// Whether `bytes` begin like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Reads an ELF file's dynamic-linking facts. `Ok(None)` for files that
/// autoPatchelf leaves alone: not ELF, object files and core dumps, static
/// executables, files without a dynamic section, and separate debug files
/// (whose `.dynamic` is a placeholder). `Err` carries goblin's reason for
/// a truncated or corrupt file.
pub fn scan(bytes: &[u8]) -> Result<Option<ElfInfo>, String> {
    if !is_elf(bytes) {
        return Ok(None);
    }
    let elf = Elf::parse(bytes).map_err(|e| e.to_string())?;
    if elf.header.e_type != ET_EXEC && elf.header.e_type != ET_DYN {
        return Ok(None);
    }
    let debug_only = elf.section_headers.iter().any(|sh| {
        sh.sh_type == SHT_NOBITS && elf.shdr_strtab.get_at(sh.sh_name) == Some(".dynamic")
    });
    if elf.dynamic.is_none() || debug_only {
        return Ok(None);
    }
    let runpath = if !elf.runpaths.is_empty() {
        Some(elf.runpaths.join(":"))
    } else if !elf.rpaths.is_empty() {
        Some(elf.rpaths.join(":"))
    } else {
        None
    };
    Ok(Some(ElfInfo {
        arch: Arch {
            bits: if elf.is_64 { 64 } else { 32 },
            machine: elf.header.e_machine,
            osabi: elf.header.e_ident[goblin::elf::header::EI_OSABI],
        },
        executable: elf.interpreter.is_some(),
        interp: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        runpath,
        soname: elf.soname.map(str::to_string),
    }))
}
