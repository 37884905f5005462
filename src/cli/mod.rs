//! The CLI face of the domain: each subcommand validates its arguments into domain types,
//! calls the domain once, and prints the result as text or, with `--json`, as one JSON value
//! on stdout. Progress bars go to stderr and only when it is a terminal.

pub mod args;
mod output;
mod status;
mod warmup;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;

use crate::cas::{DataStore, Progress};
use crate::config::{Config, open_store};
use crate::error::Error;
use crate::ids::{Name, RelPath};
use crate::maint;
use crate::runs::manifest::{Manifest, RunType, StorageMode};
use crate::runs::{RunArgs, RunFilter, RunSpec, Runs, Source};
use crate::units::{human_size, parse_duration};
use args::{AddFile, Cli, Command, RunCommand};
use output::{Bar, print_json};

pub async fn run(cli: Cli) -> Result<ExitCode> {
    // These speak to a mount, not to the store.
    match &cli.command {
        Command::Unmount { mountpoint } => {
            crate::mount::unmount(mountpoint)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Status { mountpoint } => return status::status(mountpoint, cli.json),
        Command::Warmup {
            targets,
            mount,
            jobs,
        } => return warmup::warmup(targets, mount.as_deref(), *jobs, cli.json),
        _ => {}
    }
    let mut config = Config::from_env(cli.store.as_deref())?;
    if let Command::Mount {
        cache_dir,
        cache_size,
        ..
    } = &cli.command
    {
        if let Some(dir) = cache_dir {
            config.cache_dir = dir.clone();
        }
        if let Some(size) = cache_size {
            config.cache_size = crate::units::parse_size(size).map_err(Error::BadRequest)?;
        }
    }
    let store = open_store(&config.store).await?;
    let runs = Runs::new(DataStore::new(store));
    let json = cli.json;
    match cli.command {
        Command::Mount {
            mountpoint,
            refresh,
            allow_other,
            foreground,
            read_only,
            metrics,
            ..
        } => {
            if !(refresh.is_finite() && refresh >= 0.0) {
                return Err(Error::BadRequest(format!(
                    "--refresh {refresh} is not a number of seconds"
                ))
                .into());
            }
            let opts = crate::mount::MountOptions {
                mountpoint,
                refresh: std::time::Duration::from_secs_f64(refresh),
                allow_other,
                foreground,
                read_only,
                metrics: metrics.as_deref().map(metrics_address).transpose()?,
            };
            crate::mount::mount(&config, runs, opts).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Unmount { .. } | Command::Status { .. } | Command::Warmup { .. } => {
            Ok(ExitCode::SUCCESS)
        }
        Command::Put { file, name } => put(&runs, json, file, name).await,
        Command::Get { hash, output } => get(&runs, hash, output).await,
        Command::Run(cmd) => run_command(&config, &runs, json, cmd).await,
        Command::RunsUsing { hash } => {
            let h = runs.data().resolve(&hash).await?;
            let users = runs.data().used_by(&h).await?;
            if json {
                print_json(&json!({ "hash": h, "runs": users }));
            } else {
                for r in &users {
                    println!("{r}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats => {
            let s = maint::stats::stats(&runs).await?;
            output::warn_all(&s.problems);
            if json {
                print_json(&s);
            } else {
                println!("objects           {}", s.objects);
                println!(
                    "stored bytes      {} ({})",
                    s.stored_bytes,
                    human_size(s.stored_bytes)
                );
                println!("runs              {}", s.runs);
                println!(
                    "referenced bytes  {} ({})",
                    s.referenced_bytes,
                    human_size(s.referenced_bytes)
                );
                println!("dedup ratio       {:.2}", s.dedup_ratio);
                if s.incomplete_objects > 0 {
                    println!(
                        "incomplete        {} (interrupted uploads; gc removes them)",
                        s.incomplete_objects
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck { repair } => fsck(&runs, json, repair, &config.cache_dir).await,
        Command::Gc { grace, dry_run } => {
            let grace = parse_duration(&grace).map_err(Error::BadRequest)?;
            let total = if Bar::wanted(json) {
                maint::data_bytes(&runs).await?
            } else {
                0
            };
            let bar = Bar::new(total, json, "collecting");
            let report = maint::gc::gc(&runs, grace, dry_run, bar.progress()).await?;
            bar.finish();
            output::warn_all(&report.problems);
            if json {
                print_json(&report);
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for r in &report.removed {
                    println!("{verb} {}  {}", r.hash, human_size(r.bytes));
                }
                println!(
                    "{verb} {} objects, {}; kept {}",
                    report.removed.len(),
                    human_size(report.removed_bytes),
                    report.kept
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let checks = crate::doctor::run(&config, &runs).await;
            if json {
                print_json(&checks);
            } else {
                for c in &checks {
                    println!(
                        "{:<5} {:<19} {}",
                        format!("{:?}", c.status).to_lowercase(),
                        c.name,
                        c.detail
                    );
                }
            }
            let failed = checks
                .iter()
                .any(|c| c.status == crate::doctor::Status::Fail);
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

async fn put(
    runs: &Runs,
    json: bool,
    file: std::path::PathBuf,
    name: Option<String>,
) -> Result<ExitCode> {
    let name = crate::cas::name_for(&file, name.as_deref(), "give one with --name")?;
    let size = std::fs::metadata(&file).map_err(Error::io(&file))?.len();
    let bar = Bar::new(size, json, "hashing");
    let stored = runs
        .data()
        .put_file(&file, Some(&name), bar.progress())
        .await?;
    runs.data().add_name(&stored.meta.hash, &name).await?;
    bar.finish();
    let m = &stored.meta;
    if json {
        print_json(
            &json!({ "hash": m.hash, "size": m.size, "format": m.format, "name": name, "new": stored.new }),
        );
    } else {
        let state = if stored.new { "new" } else { "already stored" };
        println!("{}  {}  {}  {state}", m.hash, m.size, m.format);
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(runs: &Runs, hash: String, output: Option<std::path::PathBuf>) -> Result<ExitCode> {
    let h = runs.data().resolve(&hash).await?;
    let meta = runs.data().require(&h).await?;
    match output {
        Some(path) => {
            // Written beside the target and renamed, so a failed get leaves no partial file.
            let tmp = path.with_file_name(format!(
                ".{}.mltrack-partial",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("out")
            ));
            let mut file = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
            let bar = Bar::new(meta.size, false, "fetching");
            let result = runs.data().export(&meta, &mut file, bar.progress()).await;
            bar.finish();
            if let Err(e) = result.and_then(|()| file.sync_all().map_err(Error::io(&tmp))) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        }
        None => {
            let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            let none: Progress = Arc::new(|_| {});
            runs.data().export(&meta, &mut stdout, none).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn fsck(runs: &Runs, json: bool, repair: bool, cache: &std::path::Path) -> Result<ExitCode> {
    let total = if Bar::wanted(json) {
        maint::data_bytes(runs).await?
    } else {
        0
    };
    let bar = Bar::new(total, json, "checking");
    let report = maint::fsck::fsck(runs, repair, Some(cache), bar.progress()).await?;
    bar.finish();
    if json {
        print_json(&report);
    } else {
        for f in &report.findings {
            let state = if f.repaired { "repaired" } else { "problem" };
            println!("{state:<9} {:<18} {}", f.kind, f.message);
        }
        println!(
            "checked {} objects ({}), {} runs and {} cached blocks: {} problems, {} repaired",
            report.objects_checked,
            human_size(report.bytes_checked),
            report.runs_checked,
            report.cache_blocks_checked,
            report.findings.len(),
            report.findings.len() - report.unrepaired()
        );
    }
    Ok(if report.unrepaired() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_command(
    config: &Config,
    runs: &Runs,
    json: bool,
    cmd: RunCommand,
) -> Result<ExitCode> {
    match cmd {
        RunCommand::Create {
            run_id,
            run_type,
            project,
            model,
            views,
            tags,
        } => {
            let tags = tags
                .iter()
                .map(|t| {
                    t.split_once('=').ok_or_else(|| {
                        Error::BadRequest(format!("tag {t:?} is not of the form KEY=VALUE"))
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let args = RunArgs {
                run_id: &run_id,
                run_type: run_type.as_deref(),
                project: project.as_deref(),
                model: model.as_deref(),
                storage_modes: &views,
                tags,
            };
            let spec =
                RunSpec::parse(args, config.default_run_type, &config.default_storage_modes)?;
            let m = runs.create(spec).await?;
            show(json, &m)
        }
        RunCommand::AddInput(args) => add_file(runs, json, "inputs", args).await,
        RunCommand::AddOutput(args) => add_file(runs, json, "outputs", args).await,
        RunCommand::AddView { run_id, mode } => {
            let run = Name::parse("run id", &run_id)?;
            let m = runs.add_view(&run, mode.parse::<StorageMode>()?).await?;
            // A command leaves the manifest current for plain readers of the bucket.
            runs.compact(&run).await?;
            show(json, &m.0)
        }
        RunCommand::Show { run_id } => {
            let m = runs.load(&Name::parse("run id", &run_id)?).await?;
            show(json, &m.0)
        }
        RunCommand::Compact { run_id } => {
            let run = Name::parse("run id", &run_id)?;
            let folded = runs.compact(&run).await?;
            if json {
                print_json(&json!({ "run_id": run, "folded": folded }));
            } else {
                println!("{run}: {folded} log entries folded into its manifest");
            }
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::List {
            project,
            run_type,
            date,
            model,
        } => {
            let filter = RunFilter {
                project: project.map(|p| Name::parse("project", &p)).transpose()?,
                model: model.map(|m| Name::parse("model", &m)).transpose()?,
                run_type: run_type.map(|t| t.parse::<RunType>()).transpose()?,
                date: date.as_deref().map(RunFilter::parse_date).transpose()?,
            };
            let listing = runs.list().await?;
            let problems: Vec<String> = listing.problems.iter().map(ToString::to_string).collect();
            output::warn_all(&problems);
            let selected: Vec<&Manifest> =
                listing.runs.iter().filter(|m| filter.matches(m)).collect();
            if json {
                print_json(&selected);
            } else {
                output::run_table(&selected);
            }
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::Delete { run_id } => {
            let m = runs.delete(&Name::parse("run id", &run_id)?).await?;
            if json {
                print_json(&json!({ "deleted": m.0.run_id }));
            } else {
                println!(
                    "deleted run {} (its data stays until `mltrack gc`)",
                    m.0.run_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn add_file(runs: &Runs, json: bool, dir: &str, args: AddFile) -> Result<ExitCode> {
    let run = Name::parse("run id", &args.run_id)?;
    let path = RelPath::join(dir, &RelPath::parse(&args.name)?)?;
    let (source, size) = match (&args.file, &args.hash) {
        (_, Some(h)) => (Source::Hash(runs.data().resolve(h).await?), 0),
        (Some(f), None) => (
            Source::File(f.clone()),
            std::fs::metadata(f).map_err(Error::io(f))?.len(),
        ),
        (None, None) => anyhow::bail!("give a FILE to store or --hash of stored data"),
    };
    let bar = Bar::new(size, json, "hashing");
    let (entry, new) = runs
        .add_file(&run, path.clone(), source, bar.progress())
        .await?;
    bar.finish();
    // A command leaves the manifest current for plain readers of the bucket.
    runs.compact(&run).await?;
    if json {
        print_json(&json!({ "run_id": run, "path": path, "entry": entry, "new": new }));
    } else {
        let state = if new { "new" } else { "already stored" };
        println!(
            "{run}: {path} -> {}  {}  {}  {state}",
            entry.hash, entry.size, entry.format
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(json: bool, m: &Manifest) -> Result<ExitCode> {
    if json {
        print_json(m);
    } else {
        output::run_details(m).context("printing the run")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--metrics ADDR`: a port alone is on the loopback address, so nothing is exposed beyond the
/// node unless an address says so.
fn metrics_address(addr: &str) -> Result<std::net::SocketAddr> {
    if let Ok(port) = addr.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    addr.parse().map_err(|_| {
        Error::BadRequest(format!(
            "--metrics {addr:?} is not a port or an address such as 127.0.0.1:9100"
        ))
        .into()
    })
}
