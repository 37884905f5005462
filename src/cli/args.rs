//! The command line as clap parses it (README.md, "Using it"). Only syntax lives here; values with
//! rules (identifiers, run types, sizes) are validated when the command turns them into
//! domain types, so that every refusal gets the same one-sentence message.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mltrack",
    version,
    about = "A content-addressed ML data store on S3 or a local directory",
    long_about = "mltrack stores data once under its SHA-256, whatever its name, and organises runs \
                  by project, date, type or model at once. The store is an S3 bucket \
                  (s3://bucket/prefix) or, by default, a local directory.\n\n\
                  Store: --store, else MLTRACK_STORE, else MLTRACK_S3_BUCKET, else \
                  $XDG_DATA_HOME/mltrack/store. S3 settings come from the standard AWS chain \
                  (AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE, credentials)."
)]
pub struct Cli {
    /// Store URL: s3://bucket/prefix, file:///path or a path [env: MLTRACK_STORE]
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,

    /// Print results as JSON
    #[arg(long, global = true)]
    pub json: bool,

    /// Log level (error, warn, info, debug, trace); RUST_LOG wins if set
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount the store as a directory tree (data/, runs/<view>/..., manifests/)
    Mount {
        mountpoint: PathBuf,
        /// Local block cache directory [env: MLTRACK_CACHE_DIR, default: $XDG_CACHE_HOME/mltrack]
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Cache size limit, e.g. 512MiB, 10GiB [env: MLTRACK_CACHE_SIZE, default: 10GiB]
        #[arg(long, value_name = "SIZE")]
        cache_size: Option<String>,
        /// Seconds before other nodes' changes are looked up again
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        refresh: f64,
        /// Mount read-only: no runs made, no files written
        #[arg(long)]
        read_only: bool,
        /// Let other users see the mount
        #[arg(long)]
        allow_other: bool,
        /// Stay in the foreground instead of starting a daemon
        #[arg(long)]
        foreground: bool,
        /// Serve Prometheus metrics over HTTP on ADDR: a port (on 127.0.0.1) or HOST:PORT
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// What a mount is doing: its store, cache, files being written, requests and errors
    Status { mountpoint: PathBuf },
    /// Fetch whole files into the node's cache through a mount, verified, before they are read
    #[command(
        long_about = "Fetch whole files into the node's cache through a mount, verified, so that \
                      training starts on a warm cache. Each argument is a path in a mount (a \
                      file, a directory, a run's directory: everything under it) or a run id \
                      (its inputs/). Files already cached are not fetched again; what does not \
                      fit in the cache is left out, and said so."
    )]
    Warmup {
        #[arg(value_name = "PATH_OR_RUN", required = true)]
        targets: Vec<String>,
        /// The mount to find run ids in (default: the one mltrack mount of this node that has
        /// the run; a run in several mounts needs this)
        #[arg(long, value_name = "MOUNTPOINT")]
        mount: Option<PathBuf>,
        /// Files fetched at once
        #[arg(long, default_value_t = 8)]
        jobs: usize,
    },
    /// Unmount a mount point (the daemon finishes and exits)
    Unmount { mountpoint: PathBuf },
    /// Store a file under its hash; prints hash, size, format and whether it was new
    Put {
        file: PathBuf,
        /// Name to record for the data (default: the file's name)
        #[arg(long)]
        name: Option<String>,
    },
    /// Write stored data to a file or stdout, verifying every block
    Get {
        /// Full hash or unique prefix (at least 4 hex digits)
        hash: String,
        /// Output file (default: stdout)
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Create, fill, inspect and delete runs
    #[command(subcommand)]
    Run(RunCommand),
    /// List the runs that use some data
    RunsUsing {
        #[arg(value_name = "HASH_OR_UNIQUE_PREFIX")]
        hash: String,
    },
    /// Objects, stored bytes, referenced bytes and the dedup ratio
    Stats,
    /// Re-hash every object, check manifests, markers and views, and verify the local cache
    Fsck {
        /// Fix markers and view pointers and drop bad cached blocks (never deletes or rewrites
        /// stored data)
        #[arg(long)]
        repair: bool,
    },
    /// Remove data that no run and no name references
    Gc {
        /// Keep anything written more recently than this (e.g. 30m, 24h, 7d)
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Only list what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Check FUSE, store access, conditional writes, the cache and the run lock directory
    Doctor,
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Create a run
    Create {
        run_id: String,
        /// Run type: experiment, production, evaluation, development, analysis
        /// [env: MLTRACK_DEFAULT_RUN_TYPE, default: experiment]
        #[arg(long = "type", value_name = "T")]
        run_type: Option<String>,
        #[arg(long, value_name = "P")]
        project: Option<String>,
        #[arg(long, value_name = "M")]
        model: Option<String>,
        /// View: by_project, by_date, by_type, by_model, flat; repeat for several
        /// [env: MLTRACK_DEFAULT_STORAGE_MODE, default: by_project]
        #[arg(long = "view", value_name = "MODE")]
        views: Vec<String>,
        /// Tag as KEY=VALUE; repeat for several
        #[arg(long = "tag", value_name = "K=V")]
        tags: Vec<String>,
    },
    /// Record an input (stored as inputs/NAME)
    AddInput(AddFile),
    /// Record an output (stored as outputs/NAME)
    AddOutput(AddFile),
    /// Add a view (storage mode) to a run
    AddView { run_id: String, mode: String },
    /// Show a run's manifest
    Show { run_id: String },
    /// List runs, optionally filtered
    List {
        #[arg(long, value_name = "P")]
        project: Option<String>,
        #[arg(long = "type", value_name = "T")]
        run_type: Option<String>,
        /// Creation date, YYYY-MM-DD (UTC)
        #[arg(long, value_name = "D")]
        date: Option<String>,
        #[arg(long, value_name = "M")]
        model: Option<String>,
    },
    /// Fold the run's manifest log into its manifest (the mount does this by itself)
    Compact { run_id: String },
    /// Delete a run (its manifest and views; the data stays until gc)
    Delete { run_id: String },
}

#[derive(Debug, Args)]
pub struct AddFile {
    pub run_id: String,
    /// Name inside inputs/ or outputs/ (may contain subdirectories: images/train.tar)
    pub name: String,
    /// The file to store
    #[arg(required_unless_present = "hash", conflicts_with = "hash")]
    pub file: Option<PathBuf>,
    /// Reference data already stored, by full hash or unique prefix
    #[arg(long)]
    pub hash: Option<String>,
}
