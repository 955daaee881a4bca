//! herdwatch's behaviour model. Pure logic, no IO: every decision is made and tested here.
