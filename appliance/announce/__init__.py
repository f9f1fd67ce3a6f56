"""The health agent (`appliance announce`): probes the box's services from outside, as a client
would, and announces the anycast prefixes through BIRD only while every probe passes."""
