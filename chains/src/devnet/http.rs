//! The request side of a fake node's HTTP/1.1, for tests that serve
//! replies themselves: the unit tests' `FakeNode` and the integration
//! tests' Bitcoin Core server.

use std::io::BufRead;

/// Reads one request from `reader` and returns its body, or `None` once the
/// client has closed the connection.
pub fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}
