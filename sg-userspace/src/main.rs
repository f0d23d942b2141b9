fn main() { println!("{}", sg::EBPF_OBJ.len()); }
