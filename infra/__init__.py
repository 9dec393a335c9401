"""Operations: embedded services, configuration, the exchange command line."""
