//! What the commands print, without ever panicking: `say!` is a `println!` and `tell!` an
//! `eprintln!` that a closed stdout or stderr (`cairn check-config | head -1`) does not crash;
//! the rest of the output is dropped quietly.

use std::fmt;
use std::io::Write;

/// `println!` that never panics (see [`out`]).
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::output::out(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
macro_rules! tell {
    ($($arg:tt)*) => { let _ = $crate::cli::output::write_line(std::io::stderr().lock(), format_args!($($arg)*)); };
}

pub(crate) use {say, tell};

/// Writes `args` and a newline to `w`, then flushes it.
pub fn write_line(mut w: impl Write, args: fmt::Arguments<'_>) -> std::io::Result<()> {
    w.write_fmt(args)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// Writes one line to stdout. A reader that went away (broken pipe) ends the output
/// quietly; any other failure is said once per line on stderr.
pub fn out(args: fmt::Arguments<'_>) {
    if let Err(e) = write_line(std::io::stdout().lock(), args)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        tell!("cairn: cannot write to stdout: {e}");
    }
}
