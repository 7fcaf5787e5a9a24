//! moto: to be written.
