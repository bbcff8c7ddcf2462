"""What a session row can say offline about where it was opened: the device
from the user agent (ua-parser, with the regexes of ua-parser-builtins),
and the kind of network of the client address. No geolocation database
ships with the project and nothing is looked up at run time, so a location
is never claimed: the address itself is on the session row."""

from __future__ import annotations

import ipaddress
from typing import Any

import ua_parser


def _version(*parts: str | None) -> str | None:
    shown = [part for part in parts if part]
    return ".".join(shown) or None


def device_info(user_agent: str | None) -> dict[str, Any] | None:
    """{browser, browser_version, os, os_version, device, brand, model}, each
    None where the user agent does not say; None without a user agent."""
    if not user_agent:
        return None
    parsed = ua_parser.parse(user_agent)
    browser, system, device = parsed.user_agent, parsed.os, parsed.device
    return {
        "browser": browser.family if browser else None,
        "browser_version": _version(browser.major, browser.minor) if browser else None,
        "os": system.family if system else None,
        "os_version": _version(system.major, system.minor) if system else None,
        "device": device.family if device else None,
        "brand": device.brand if device else None,
        "model": device.model if device else None,
    }


def location_info(ip_address: str | None) -> dict[str, Any] | None:
    """{network}: loopback, private, link-local, public or reserved."""
    if ip_address is None:
        return None
    address = ipaddress.ip_address(ip_address)
    if address.is_loopback:
        network = "loopback"
    elif address.is_link_local:
        network = "link-local"
    elif address.is_private:
        network = "private"
    elif address.is_global:
        network = "public"
    else:
        network = "reserved"
    return {"network": network}
