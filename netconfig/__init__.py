"""Host networking for the appliance: BIRD's configuration and control socket, and (through
pyroute2, never by shelling out to `ip`) addresses, tunnels, policy rules and routes."""
