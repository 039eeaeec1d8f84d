use super::*;

#[test]
fn a_written_file_reads_back_whole_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ready.json");
    assert!(read(&path).expect("absent is not an error").is_none());
    let mut ready = Ready::this_process("127.0.0.1:4321".parse().expect("addr"));
    ready.mcp_url = Some("http://127.0.0.1:9/mcp".into());
    write(&path, &ready).expect("write");
    assert_eq!(read(&path).expect("read"), Some(ready.clone()));
    assert_eq!(ready.url, "http://127.0.0.1:4321");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ready.json")]);
    let text = std::fs::read_to_string(&path).expect("text");
    assert!(
        !text.contains("sse_url"),
        "absent fields are omitted: {text}"
    );
}

#[test]
fn garbage_is_a_parse_error_and_a_missing_directory_a_write_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ready.json");
    std::fs::write(&path, b"listening on").expect("write");
    assert!(matches!(read(&path), Err(ReadyFileError::Parse { .. })));
    let ready = Ready::this_process("127.0.0.1:1".parse().expect("addr"));
    let nowhere = dir.path().join("no/such/dir/ready.json");
    assert!(matches!(
        write(&nowhere, &ready),
        Err(ReadyFileError::Write { .. })
    ));
}
