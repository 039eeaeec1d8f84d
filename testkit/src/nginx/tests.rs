//! The site file the starter fills.

#[test]
fn the_nginx_site_of_deploy_has_the_markers_the_harness_fills() {
    let site = super::fill_section(
        super::SITE,
        "daemons",
        &["server 127.0.0.1:1 max_fails=1 fail_timeout=10s;".to_owned()],
    )
    .expect("daemons marker");
    let site = super::fill_section(&site, "listen", &["listen 127.0.0.1:2;".to_owned()])
        .expect("listen marker");
    assert!(site.contains("    server 127.0.0.1:1 max_fails=1"));
    assert!(!site.contains("server memento:8080"));
    assert!(site.contains("listen 127.0.0.1:2;"));
    assert!(!site.contains("listen 8080;"));
    assert!(site.contains("hash $memento_user consistent;"));
    assert!(super::fill_section(&site, "nothing", &[]).is_err());
}
