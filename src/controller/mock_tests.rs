//! Mock-API tests of the shell.
