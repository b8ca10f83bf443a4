//! What the Prisma CLI prints, reproduced byte for byte from the line
//! `N migrations found in prisma/migrations` onward (status, deploy) or from the command's own
//! message onward (resolve), with exit codes.
//!
//! Conventions, checked against the 6.19.3 goldens in `tests/fixtures/prisma-golden/`:
//! * The header the CLI prints first (schema path, datasource, driver-adapter warning) and the
//!   blank line(s) between it and the body are not part of the output here.
//! * Blank lines are empty, as in Prisma 7 (6.19.3 prints some whitespace-only lines).
//! * No colours (the CLI's `NO_COLOR` output); the path is always the literal
//!   `prisma/migrations`, as in the CLI.
//! * Coded errors are `Error: <code>\n\n<message>\n` followed by the newline `console.error`
//!   adds; non-coded ones are `Error: <message>\n`. Exit code 1.

use super::diagnose::{DiagnoseOutput, HistoryDiagnostic};
use super::error::{PrismaError, PrismaUserError};
use super::outcome::{DeployOutcome, ResolveAction};
use serde::Serialize;

/// What a Prisma CLI command prints, and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrismaCliOutput {
    /// Text for standard output.
    pub stdout: String,
    /// Text for standard error.
    pub stderr: String,
    /// The process exit code (0 or 1).
    pub exit_code: i32,
}

impl PrismaCliOutput {
    /// An error-only output (exit 1), with `stdout` already printed before it.
    pub fn error(stdout: String, err: &PrismaError) -> Self {
        PrismaCliOutput {
            stdout,
            stderr: err.cli_stderr(),
            exit_code: 1,
        }
    }
}

impl DeployOutcome {
    /// What `prisma migrate deploy` prints for this outcome.
    pub fn render_prisma(&self) -> PrismaCliOutput {
        render_deploy(self.migrations_found, &Ok(self.clone()))
    }
}

fn plural(n: usize) -> &'static str {
    if n > 1 {
        "s"
    } else {
        ""
    }
}

/// The `N migration(s) found in prisma/migrations` line (or `No migration found…`), with its `\n`.
pub fn migrations_found_line(count: usize) -> String {
    if count > 0 {
        format!(
            "{count} migration{} found in prisma/migrations\n",
            plural(count)
        )
    } else {
        "No migration found in prisma/migrations\n".to_string()
    }
}

/// `prisma migrate status` for a folder with `local_count` migrations and the diagnosis (or the
/// Prisma error the diagnosis raised, which the CLI prints before the count line).
pub fn render_status(
    local_count: usize,
    first_local: Option<&str>,
    diagnosis: &Result<DiagnoseOutput, PrismaUserError>,
) -> PrismaCliOutput {
    let d = match diagnosis {
        Ok(d) => d,
        Err(e) => {
            return PrismaCliOutput {
                stdout: String::new(),
                stderr: e.cli_stderr(),
                exit_code: 1,
            }
        }
    };
    let stdout = match render_history(d, local_count) {
        Ok(stdout) => stdout,
        Err(output) => return output,
    };
    if d.has_migrations_table {
        return render_with_table(d, stdout);
    }
    render_not_managed(local_count, first_local, stdout)
}

/// The count line, then what the history diagnosis says when the database is behind or the
/// histories diverge (`Err`: the whole output), else the count line alone (`Ok`).
fn render_history(d: &DiagnoseOutput, local_count: usize) -> Result<String, PrismaCliOutput> {
    let mut stdout = migrations_found_line(local_count);
    match &d.history {
        Some(HistoryDiagnostic::DatabaseIsBehind {
            unapplied_migration_names: names,
        }) => {
            stdout.push_str(&format!(
                "Following migration{} have not yet been applied:\n{}\n\n\
                 To apply migrations in development run prisma migrate dev.\n\
                 To apply migrations in production run prisma migrate deploy.\n",
                plural(names.len()),
                names.join("\n")
            ));
            return Err(PrismaCliOutput {
                stdout,
                stderr: String::new(),
                exit_code: 1,
            });
        }
        Some(HistoryDiagnostic::HistoriesDiverge {
            last_common_migration_name,
            unpersisted_migration_names,
            unapplied_migration_names,
        }) => {
            let stderr = format!(
                "Your local migration history and the migrations table from your database are different:\n\n\
                 The last common migration is: {}\n\n\
                 The migration{} have not yet been applied:\n{}\n\n\
                 The migration{} from the database are not found locally in prisma/migrations:\n{}\n",
                last_common_migration_name.as_deref().unwrap_or("null"),
                plural(unapplied_migration_names.len()),
                unapplied_migration_names.join("\n"),
                plural(unpersisted_migration_names.len()),
                unpersisted_migration_names.join("\n"),
            );
            return Err(PrismaCliOutput {
                stdout,
                stderr,
                exit_code: 1,
            });
        }
        _ => {}
    }
    Ok(stdout)
}

/// The status of a database that has the migrations table: its failed migrations, or up to date.
fn render_with_table(d: &DiagnoseOutput, mut stdout: String) -> PrismaCliOutput {
    if let Some(first) = d.failed_migration_names.first() {
        let names = &d.failed_migration_names;
        let stderr = format!(
            "Following migration{} have failed:\n{}\n\n\
             During development if the failed migration(s) have not been deployed to a production database you can then fix the migration(s) and run prisma migrate dev.\n\n\
             The failed migration(s) can be marked as rolled back or applied:\n\n\
             - If you rolled back the migration(s) manually:\n\
             prisma migrate resolve --rolled-back \"{first}\"\n\n\
             - If you fixed the database manually (hotfix):\n\
             prisma migrate resolve --applied \"{first}\"\n\n\
             Read more about how to resolve migration issues in a production database:\n\
             https://pris.ly/d/migrate-resolve\n",
            plural(names.len()),
            names.join("\n"),
        );
        return PrismaCliOutput {
            stdout,
            stderr,
            exit_code: 1,
        };
    }
    stdout.push_str("\nDatabase schema is up to date!\n");
    PrismaCliOutput {
        stdout,
        stderr: String::new(),
        exit_code: 0,
    }
}

/// A database without the migrations table: not managed by Prisma Migrate.
fn render_not_managed(
    local_count: usize,
    first_local: Option<&str>,
    stdout: String,
) -> PrismaCliOutput {
    let stderr = match first_local {
        // Unreachable in practice (local migrations without a table are "databaseIsBehind"),
        // kept for parity with the CLI.
        Some(first) if local_count > 0 => format!(
            "The current database is not managed by Prisma Migrate.\n\n\
             If you want to keep the current database structure and data and create new migrations, baseline this database with the migration \"{first}\":\n\
             prisma migrate resolve --applied \"{first}\"\n\n\
             Read more about how to baseline an existing production database:\n\
             https://pris.ly/d/migrate-baseline\n"
        ),
        _ => "The current database is not managed by Prisma Migrate.\n\n\
              Read more about how to baseline an existing production database:\n\
              https://pris.ly/d/migrate-baseline\n"
            .to_string(),
    };
    PrismaCliOutput {
        stdout,
        stderr,
        exit_code: 1,
    }
}

/// `prisma migrate deploy`: the count line, then the list of applied migrations, or the error.
///
/// A script failure mid-run prints only the error, like the CLI (which does not list the
/// migrations applied before it).
pub fn render_deploy(
    migrations_found: usize,
    result: &Result<DeployOutcome, PrismaError>,
) -> PrismaCliOutput {
    let mut stdout = migrations_found_line(migrations_found);
    stdout.push('\n');
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return PrismaCliOutput::error(stdout, e),
    };
    if let Some(stop) = &outcome.stopped {
        return PrismaCliOutput {
            stdout,
            stderr: stop.cli_stderr(),
            exit_code: 1,
        };
    }
    stdout.push('\n');
    if outcome.applied.is_empty() {
        stdout.push_str("No pending migrations to apply.\n");
    } else {
        stdout.push_str("The following migration(s) have been applied:\n\nmigrations/");
        for name in &outcome.applied {
            stdout.push_str(&format!("\n  └─ {name}/\n    └─ migration.sql"));
        }
        stdout.push_str("\n\nAll migrations have been successfully applied.\n");
    }
    PrismaCliOutput {
        stdout,
        stderr: String::new(),
        exit_code: 0,
    }
}

/// `prisma migrate resolve --applied|--rolled-back <name>`.
pub fn render_resolve<T>(
    migration: &str,
    action: ResolveAction,
    result: &Result<T, PrismaError>,
) -> PrismaCliOutput {
    match result {
        Ok(_) => PrismaCliOutput {
            stdout: format!(
                "Migration {migration} marked as {}.\n\n",
                match action {
                    ResolveAction::Applied => "applied",
                    ResolveAction::RolledBack => "rolled back",
                }
            ),
            stderr: String::new(),
            exit_code: 0,
        },
        Err(e) => PrismaCliOutput::error(String::new(), e),
    }
}
