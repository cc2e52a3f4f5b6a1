//! The request pipeline between the transports and the store. Each concern
//! lives in its own module and can be switched off for side-by-side
//! measurement.

pub mod admission;
