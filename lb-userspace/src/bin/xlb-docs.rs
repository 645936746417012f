//! `xlb-docs DIR`: writes xlb's man pages and shell completions into DIR, from the same CLI
//! definition the binary parses (`lb_userspace::cli::Cli`), so they cannot drift from it:
//!
//! - `DIR/man/xlb.8`, and `xlb-run.8`, `xlb-check-config.8`, ... for each command;
//! - `DIR/completions/xlb.bash`, `_xlb` (zsh) and `xlb.fish`.
//!
//! `cargo xtask package` runs it and the package ships what it writes; the package does not
//! ship this program.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::{
    roff::{bold, italic, roman, Roff},
    Man,
};
use lb_userspace::cli::Cli;

/// Administration tools and daemons.
const SECTION: &str = "8";

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        bail!("usage: xlb-docs DIR (writes DIR/man/*.8 and DIR/completions/*)");
    };
    let dir = PathBuf::from(dir);
    let man = man_pages(&dir.join("man"))?;
    let completions = completions(&dir.join("completions"))?;
    println!("xlb-docs: wrote {man} man pages and {completions} completion files under {}", dir.display());
    Ok(())
}

/// xlb.8 with the files and signals an operator needs, then one page per command, at every
/// level (`xlb-run.8`; `xlb-a-b.8` for `xlb a b`).
fn man_pages(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = without_help_subcommand(Cli::command());
    // Gives every subcommand its page name (display name) and its `xlb a b` in the synopsis.
    cmd.build();
    let mut subcommands = Vec::new();
    collect_subcommands(&cmd, &mut subcommands);
    let names: Vec<String> = subcommands.iter().map(page_name).collect();

    let root = page(cmd);
    write_page(dir, &root, |out| {
        root.render_title(out)?;
        root.render_name_section(out)?;
        root.render_synopsis_section(out)?;
        root.render_description_section(out)?;
        root.render_options_section(out)?;
        root.render_subcommands_section(out)?;
        out.write_all(root_sections(&names).as_bytes())?;
        root.render_version_section(out)
    })?;
    for sub in subcommands {
        let man = page(sub);
        write_page(dir, &man, |out| {
            man.render(out)?;
            out.write_all(see_also(&[("xlb", SECTION)]).as_bytes())
        })?;
    }
    Ok(1 + names.len())
}

/// `help` is clap's own (`xlb help`, `xlb a help`), not a command to document.
fn without_help_subcommand(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true).mut_subcommands(without_help_subcommand)
}

fn collect_subcommands(cmd: &clap::Command, into: &mut Vec<clap::Command>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        into.push(sub.clone());
        collect_subcommands(sub, into);
    }
}

/// `xlb-run` for `xlb run` (clap's display name once the root command is built).
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_owned()
}

fn page(cmd: clap::Command) -> Man {
    let title = page_name(&cmd).to_uppercase();
    Man::new(cmd)
        .section(SECTION)
        .title(title)
        .date(date())
        .source(concat!("xlb ", env!("CARGO_PKG_VERSION")))
        .manual("System Administration")
}

/// The pages' date, YYYY-MM-DD: of SOURCE_DATE_EPOCH when set (`cargo xtask package` sets it
/// to the last commit's time, so that the same commit gives the same package), else today.
/// It must not be empty: an empty `.TH` argument is dropped and shifts the others.
fn date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    });
    // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn write_page(dir: &Path, man: &Man, render: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    let path = dir.join(man.get_filename());
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    render(&mut file).with_context(|| format!("writing {}", path.display()))
}

/// FILES, SIGNALS and SEE ALSO of xlb.8: what the unit and the package rely on.
fn root_sections(pages: &[String]) -> String {
    let mut roff = Roff::default();
    tagged(&mut roff, "FILES", &[
        ("/etc/xlb/xlb.toml", "The configuration; check it with xlb check-config. Its [agent] section may move the files below."),
        ("/run/xlb/xlb.sock", "The agent's control socket (root only): stats, reload, runtime changes."),
        ("/var/lib/xlb/runtime.json", "Runtime changes (xlb backend ..., xlb service ...), kept across restarts."),
        ("/sys/fs/bpf/xlb", "Where the XDP program, its links and maps are pinned while the agent runs, and across a restart."),
        ("/lib/systemd/system/xlb.service", "The systemd unit."),
    ]);
    tagged(&mut roff, "SIGNALS", &[
        ("SIGTERM, SIGINT, SIGQUIT", "Stop: a VRRP master resigns, the agent removes the VIPs it added, detaches the program and removes its pins, so flows are forgotten. With [announce], the node drains first, as xlb drain-node does. systemctl stop sends SIGTERM."),
        ("SIGUSR2", "Stop for a restart: the program stays attached and forwards with its pinned maps; the next xlb run adopts them and no flow is lost. systemctl restart sends SIGUSR2 (the unit's RestartKillSignal)."),
        ("SIGHUP", "Read the configuration file again, as xlb reload does (systemctl reload runs xlb reload)."),
        ("SIGUSR1", "Write the full status to the log."),
    ]);
    let mut out = roff.to_roff();
    let mut see: Vec<(&str, &str)> = pages.iter().map(|p| (p.as_str(), SECTION)).collect();
    see.extend([("systemctl", "1"), ("bpftool", "8")]);
    out.push_str(&see_also(&see));
    out
}

/// A section of tagged paragraphs: each tag in bold, its text indented below.
fn tagged(roff: &mut Roff, heading: &str, items: &[(&str, &str)]) {
    roff.control("SH", [heading]);
    for (tag, text) in items {
        roff.control("TP", []).text([bold(*tag)]).text([roman(*text)]);
    }
}

/// A SEE ALSO section naming (page, section) pairs.
fn see_also(pages: &[(&str, &str)]) -> String {
    let mut roff = Roff::default();
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, (page, section)) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(italic(*page));
        line.push(roman(format!("({section})")));
    }
    roff.text(line);
    roff.to_roff()
}

/// Completions named as each shell looks them up: bash and fish by the command's name, zsh
/// by `_` and the name.
fn completions(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let shells = [(Shell::Bash, "xlb.bash"), (Shell::Zsh, "_xlb"), (Shell::Fish, "xlb.fish")];
    for (shell, name) in shells {
        let path = dir.join(name);
        let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_complete::generate(shell, &mut Cli::command(), "xlb", &mut file);
        file.flush()?;
    }
    Ok(shells.len())
}
