-- One database per service: each service owns its data, as in the design.
CREATE DATABASE status;
CREATE DATABASE combat;
CREATE DATABASE pokeball;
CREATE DATABASE delivery;
