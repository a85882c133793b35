"""The address rule shared by the save-time check and the connection-time check."""

from __future__ import annotations

import ipaddress

import pytest

from integrations.downstream.egress import address_refusal


@pytest.mark.parametrize(
    "address",
    ["127.0.0.2", "::1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "fe80::1", "fc00::1", "100.100.100.200",
     "0.0.0.0", "::", "239.1.1.1", "ff02::1", "240.0.0.1", "192.0.0.9", "198.18.0.1", "::ffff:10.0.0.1",
     "64:ff9b::a00:1", "2002:a00:1::", "fec0::1", "::7f00:1", "2001:db8::1"],
)  # fmt: skip
def test_special_addresses_are_refused(address):
    assert address_refusal(ipaddress.ip_address(address), allow_loopback=False) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed_and_loopback_only_with_the_switch(address):
    assert address_refusal(ipaddress.ip_address(address), allow_loopback=False) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) == "a private address"
