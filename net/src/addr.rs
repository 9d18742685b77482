//! The address a process listening on all interfaces tells others to reach it at.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// The machine's address on its default route (the interface other machines reach it on), found
/// by connecting a UDP socket (no packet is sent). `None` without a default route or when that is
/// loopback.
pub fn default_route_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).ok()?;
    // TEST-NET-1 (RFC 5737): never answered, only used to pick the route.
    socket
        .connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9))
        .ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// What to advertise for a listener bound to `bind`: `explicit` when given, the bound address
/// when it is a specific one, else the default route's address, else loopback.
pub fn advertised_ip(explicit: Option<String>, bind: IpAddr) -> String {
    if let Some(ip) = explicit {
        return ip;
    }
    if !bind.is_unspecified() {
        return bind.to_string();
    }
    default_route_ip()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_then_bound_then_the_route() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(advertised_ip(Some("10.1.2.3".into()), any), "10.1.2.3");
        assert_eq!(
            advertised_ip(None, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7))),
            "127.0.0.7"
        );
        let chosen: IpAddr = advertised_ip(None, any).parse().expect("an address");
        assert!(!chosen.is_unspecified());
        if let Some(route) = default_route_ip() {
            assert_eq!(chosen, route);
            assert!(!route.is_loopback());
        } else {
            assert!(chosen.is_loopback());
        }
    }
}
